"""What ``GET /v1/status``, ``GET /v1/models`` and the event log's ``snapshot`` events
(for ``regulator report``) show of a runtime (JSON-ready)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from regulator.service.monitors import ood_threshold

if TYPE_CHECKING:
    from regulator.service.runtime import Runtime

__all__ = ["models_view", "snapshot_fields", "status_view"]


def status_view(rt: Runtime) -> dict[str, Any]:
    """Model, monitors, drift, recalibration state, storage of one device."""
    s, snap, guard = rt.serving, rt.snapshot(), rt.state.guard
    st = rt.recal.state
    current = st.current
    return {
        "device": rt.policy.device.id,
        "version": s.version,
        "family": s.bundle.task.get("family"),
        "profile": s.bundle.profile.name,
        "samples": rt.n_samples,
        "low_power": rt.low_power,
        "n_steps": s.model.n_steps,
        "chip_age_s": rt.slot.chip_age_s,
        "monitors": {
            "accuracy": snap.accuracy,
            "labels_in_window": snap.labels_in_window,
            "ood_mean_p_value": snap.ood_mean_p_value,
            "drift_detected": snap.drift_detected,
            "spike_density": snap.spike_density,
            "power_w": snap.power_w or 0.0,
            "energy_j_total": snap.energy_j_total,
        },
        "drift": {
            "detected": snap.drift_detected,
            "statistic": snap.drift_statistic,
            "threshold": snap.drift_threshold,
            "alarms": snap.raw_alarms,
            "detections": len(rt.detections),
            "change_sample": rt.monitors.episodes.change_sample,
            "explanation": rt.explanation,
        },
        "recalibration": {
            "phase": st.phase,
            "trigger": current.trigger if current else None,
            "labels_needed": rt.recal.waiting_need,
            "learning_energy_j_today": rt.budget.today_j(rt.wall_clock()),
        },
        "last_recalibrations": [r.to_dict() for r in rt.results[-5:]],
        "labels_buffered": len(rt.intake),
        "degraded": bool(rt.registry.problems) or guard.full,
        "problems": list(rt.registry.problems),
        "storage": {
            "full": guard.full,
            "free_bytes": guard.free_bytes(),
            "reserve_bytes": guard.reserve_bytes,
            "state_bytes": guard.state_bytes(),
            "events_waiting": rt.state.events.backlog,
            "events_dropped": rt.state.events.dropped,
            "orphans_removed_at_start": rt.state.orphans_removed,
        },
    }


def models_view(rt: Runtime) -> list[dict[str, Any]]:
    """Registry versions with lineage, the served one marked."""
    cur = rt.registry.current()
    return [{**v.as_dict(), "serving": v.version == cur} for v in rt.registry.versions()]


def snapshot_fields(rt: Runtime, t_s: float) -> dict[str, Any]:
    """The monitors at ``t_s``, as a ``snapshot`` event's fields."""
    s = rt.snapshot()
    return {
        "t_s": t_s,
        "samples": rt.n_samples,
        "accuracy": s.accuracy,
        "ood_p_value": s.ood_mean_tail_p_value,
        "ood_threshold": ood_threshold(rt.policy),
        "drift": s.drift_detected,
        "drift_statistic": s.drift_statistic,
        "drift_threshold": s.drift_threshold,
        "spike_density": s.spike_density,
        "power_w": s.power_w or 0.0,
        "energy_inference_j": s.inference_j_total,
        "energy_learning_j": s.learning_j_total,
        "chip_age_s": rt.slot.chip_age_s,
        "version": rt.serving.version,
    }
