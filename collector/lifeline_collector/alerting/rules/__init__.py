"""Alert rules, one module per rule, each named after the rule it holds.

A rule looks at one agent's view and states which conditions hold right now (``Finding``s); it
does not remember anything: the state machine (``alerting.state``) turns findings into a
lifecycle. All share one shape (``rule.Rule``).

- ``position_silent``: PositionSilent — a position not heard from;
- ``cad_target_unreachable``: CadTargetUnreachable — the agent's probes of a CAD server fail;
- ``cad_at_risk``: CadAtRisk (and its RiskBands) — the agent predicts CAD will be lost;
- ``position_layer_failed``: PositionLayerFailed — a layer on the way to CAD failed, or the
  laptop runs on battery;
- ``failover_not_ready``: FailoverNotReady — the backup path is broken while the primary works.

The last three read the agent's own judgement (its layer states, verdict, risk). Their summaries
are one sentence a supervisor reads in two seconds: the position and site, what is broken, how
bad, the time left and whether the backup is ready —

    Position 12 (north) will likely lose CAD within 45 s — VPN tunnel losing packets (loss 18 %);
    hotspot ready.
    Position 12 (north) lost CAD — home router unreachable; hotspot not ready.
"""
