/*
 * The pod sandbox ("pause") process of the local cluster's containerd: it holds the pod's
 * namespaces open and does nothing else. No registry is reachable on our machines, so the
 * upstream registry.k8s.io/pause image cannot be pulled; this is built instead
 * (`edgeaigc images build --image pause`, a static binary in an image of its own).
 *
 * It sleeps until SIGTERM or SIGINT and exits 0 then. As PID 1 of a pod that shares its PID
 * namespace it is the parent of orphaned processes, so it reaps children on SIGCHLD (zombies
 * would otherwise pile up in the pod).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int signal_number) {
    (void)signal_number;
    _exit(0);
}

static void reap(int signal_number) {
    (void)signal_number;
    int saved_errno = errno; /* a handler must not disturb errno of the code it interrupted */
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved_errno;
}

static int on(int signal_number, void (*handler)(int)) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = handler;
    sigemptyset(&action.sa_mask);
    /* SA_RESTART: pause() is not restarted anyway, but nothing else here should see EINTR. */
    action.sa_flags = SA_RESTART | (signal_number == SIGCHLD ? SA_NOCLDSTOP : 0);
    return sigaction(signal_number, &action, NULL);
}

int main(int argc, char **argv) {
    (void)argv;
    if (argc != 1) {
        fputs("usage: pause (no arguments; exits 0 on SIGTERM or SIGINT)\n", stderr);
        return 2;
    }
    if (getpid() != 1) {
        fputs("pause: warning: not PID 1 of its namespace\n", stderr);
    }
    if (on(SIGTERM, stop) != 0 || on(SIGINT, stop) != 0 || on(SIGCHLD, reap) != 0) {
        perror("pause: sigaction");
        return 1;
    }
    for (;;) {
        pause();
    }
}
