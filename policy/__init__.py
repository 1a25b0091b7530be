"""The placement policy: EdgeAIGC system model, observation encoder, plans, baselines, TD3.

Modules that the operator imports use numpy only; torch is imported only by training code
(:mod:`.td3`, :mod:`.networks`, :mod:`.train`, :mod:`.export`).
"""

from edgeaigc.policy.registration import ENV_ID, register_envs

register_envs()

__all__ = ["ENV_ID", "register_envs"]
