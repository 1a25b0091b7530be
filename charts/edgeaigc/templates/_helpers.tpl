{{/* Names: prefixed with the chart name and cut to 63 characters (a DNS label). */}}
{{- define "edgeaigc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "edgeaigc.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<fullname>-<suffix>", still at most 63 characters. */}}
{{- define "edgeaigc.componentName" -}}
{{- $root := index . 0 }}{{- $suffix := index . 1 }}
{{- printf "%s-%s" (include "edgeaigc.fullname" $root | trunc (int (sub 62 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}

{{/* Cluster-scoped objects carry the release namespace too: two releases never share one. */}}
{{- define "edgeaigc.clusterName" -}}
{{- $root := index . 0 }}{{- $suffix := index . 1 }}
{{- printf "%s-%s-%s" $root.Release.Namespace (include "edgeaigc.fullname" $root) $suffix | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "edgeaigc.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the release (uninstall checks select by app.kubernetes.io/instance). */}}
{{- define "edgeaigc.labels" -}}
helm.sh/chart: {{ include "edgeaigc.chart" . }}
{{ include "edgeaigc.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: edgeaigc
{{- end }}

{{- define "edgeaigc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "edgeaigc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component: [root, component]. */}}
{{- define "edgeaigc.componentLabels" -}}
{{ include "edgeaigc.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "edgeaigc.componentSelectorLabels" -}}
{{ include "edgeaigc.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "edgeaigc.serviceAccountName" -}}
{{- include "edgeaigc.componentName" (list . "operator") }}
{{- end }}

{{- define "edgeaigc.leaseName" -}}
{{- default (include "edgeaigc.fullname" .) .Values.operator.leaderElection.leaseName }}
{{- end }}

{{- /* client-go's rules (the operator exits 2 otherwise): a leader stops before a standby may take over. */ -}}
{{- define "edgeaigc.checkLeaderElection" -}}
{{- with .Values.operator.leaderElection }}
{{- if and .enabled (le (float64 .leaseDuration) (float64 .renewDeadline)) }}
{{- fail "operator.leaderElection.leaseDuration must be longer than renewDeadline" }}
{{- end }}
{{- if and .enabled (le (float64 .renewDeadline) (mulf 1.2 .retryPeriod)) }}
{{- fail "operator.leaderElection.renewDeadline must be longer than 1.2 x retryPeriod" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "edgeaigc.tag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{- define "edgeaigc.operatorImage" -}}
{{- printf "%s:%s" .Values.image.operatorRepository (include "edgeaigc.tag" .) }}
{{- end }}

{{- define "edgeaigc.inferenceImage" -}}
{{- printf "%s:%s" .Values.image.inferenceRepository (include "edgeaigc.tag" .) }}
{{- end }}

{{/* The namespaces the operator watches when not cluster-wide (default: the release namespace). */}}
{{- define "edgeaigc.watchNamespaces" -}}
{{- if and .Values.operator.clusterWide .Values.operator.watchNamespaces }}
{{- fail "operator.clusterWide and operator.watchNamespaces exclude each other: give one" }}
{{- end }}
{{- toJson (default (list .Release.Namespace) .Values.operator.watchNamespaces | uniq) }}
{{- end }}

{{/* The routing table ConfigMap of a PlacementPolicy (operator/builders.py: object_name(policy, "routing")). */}}
{{- define "edgeaigc.routingConfigMap" -}}
{{- printf "edgeaigc-%s-routing" .Values.gateway.placementPolicy | lower }}
{{- end }}

{{/* Pod Security "restricted": pod level. */}}
{{- define "edgeaigc.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
runAsGroup: {{ .Values.runAsUser }}
fsGroup: {{ .Values.runAsUser }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Pod Security "restricted": container level. */}}
{{- define "edgeaigc.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "edgeaigc.scrapeAnnotations" -}}
{{- $root := index . 0 }}
{{- if $root.Values.metrics.annotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ index . 1 | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{- define "edgeaigc.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/* An egress rule to a destination of values.networkPolicy ({peers, ports}): [destination, protocols].
An empty peers list means any address, an empty ports list every port (each port once per protocol). */}}
{{- define "edgeaigc.egressRule" -}}
{{- $destination := index . 0 }}
{{- $rule := dict }}
{{- with $destination.peers }}{{ $_ := set $rule "to" . }}{{ end }}
{{- with $destination.ports }}
{{- $ports := list }}
{{- range $port := . }}{{ range $protocol := index $ 1 }}{{ $ports = append $ports (dict "port" $port "protocol" $protocol) }}{{ end }}{{ end }}
{{- $_ := set $rule "ports" $ports }}
{{- end }}
{{- toYaml (list $rule) }}
{{- end }}

{{/* Egress to the cluster DNS (UDP and TCP), which every pod of the system needs for service names. */}}
{{- define "edgeaigc.dnsEgress" -}}
{{ include "edgeaigc.egressRule" (list .Values.networkPolicy.dns (list "UDP" "TCP")) }}
{{- end }}

{{/* The model replicas the operator creates (operator/builders.py: managed-by edgeaigc, component
edge-inference or cloud-inference; they listen on the inference port 8080). */}}
{{- define "edgeaigc.modelPodSelector" -}}
matchLabels:
  app.kubernetes.io/managed-by: edgeaigc
matchExpressions:
  - key: app.kubernetes.io/component
    operator: In
    values: [edge-inference, cloud-inference]
{{- end }}

{{/* The operator's edge replicas only: site neighbours fetch a model's file from them (peer-to-peer). */}}
{{- define "edgeaigc.edgeModelPodSelector" -}}
matchLabels:
  app.kubernetes.io/managed-by: edgeaigc
  app.kubernetes.io/component: edge-inference
{{- end }}

{{/* The inference port of the operator's model replicas (operator/constants.py INFERENCE_PORT). */}}
{{- define "edgeaigc.modelPort" -}}
8080
{{- end }}

{{/* Checkov findings left on purpose, with the reason (read by `checkov` on the rendered chart). */}}
{{- define "edgeaigc.checkovSkips" -}}
checkov.io/skip1: CKV_K8S_15=image.pullPolicy is the user's choice; IfNotPresent for tagged releases, Never where images are imported (kind, the local real nodes)
checkov.io/skip2: CKV_K8S_43=images are named by image.tag (the chart's appVersion); pinning digests is left to the deployer
{{- end }}
