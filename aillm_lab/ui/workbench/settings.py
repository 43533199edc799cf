"""The Settings page, read-only: effective settings, the default model and why, which keys
are set (never their values), budgets and their use, and the safety policy."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, SecretStr

import aillm_lab
from aillm_lab.core.lab import Lab

KEYS = {"openai_api_key": "OpenAI", "anthropic_api_key": "Anthropic"}
SHOWN_APART = {"safety", *KEYS}  # the policy has its own pane; keys show as set / not set


class SettingsPage:
    """Built once per session from ``lab.settings``; nothing here writes or reveals a key."""

    title = "Settings"

    def __init__(self, lab: Lab) -> None:
        import panel as pn

        self.lab = lab
        model_id, reason = lab.default_model_reason()
        self.model_info = pn.pane.Markdown(
            f"**Default model:** `{model_id}` — {reason}\n\n**Providers here:** "
            + ", ".join(f"`{p}`" for p in aillm_lab.registry.providers()), name="settings-model")
        self.keys = pn.widgets.Tabulator(key_presence(lab), disabled=True, show_index=False)
        self.budgets = pn.pane.Markdown(self.budget_text(), name="settings-budgets")
        self.table = pn.widgets.Tabulator(settings_frame(lab), disabled=True, show_index=False,
                                          sizing_mode="stretch_width")
        self.safety = pn.pane.JSON(lab.settings.safety.model_dump(mode="json"), depth=2,
                                   name="settings-safety", sizing_mode="stretch_width")
        self.view = pn.Column(
            pn.pane.Markdown("### Settings (read-only)\nChange them with `AILLM_*` variables "
                             "or a TOML file (`AILLM_CONFIG`), then restart the server."),
            self.model_info, pn.pane.Markdown("#### API keys"), self.keys,
            pn.pane.Markdown("#### Budgets"), self.budgets,
            pn.pane.Markdown("#### Effective settings"), self.table,
            pn.pane.Markdown("#### Safety policy"), self.safety,
            name=self.title, sizing_mode="stretch_width")

    def budget_text(self) -> str:
        s = self.lab.settings
        cap = "no cap" if s.budget_usd is None else f"${s.budget_usd:.2f}"
        per_run = "no cap" if s.run_budget_usd is None else f"${s.run_budget_usd:.2f}"
        return (f"Lab budget: {cap} · per run: {per_run} · spent by this server so far: "
                f"${self.lab.gateway.budget.spent_usd:.4f}")


def key_presence(lab: Lab) -> Any:
    """One row per vendor key: whether it is set. The value never leaves the settings."""
    import pandas as pd

    rows = [{"key": field, "vendor": vendor,
             "set": "yes" if getattr(lab.settings, field) is not None else "no"}
            for field, vendor in KEYS.items()]
    return pd.DataFrame(rows)


def settings_frame(lab: Lab) -> Any:
    """Every other setting as (name, value text); a secret-typed field shows as set / not set."""
    import pandas as pd

    rows = []
    for name in type(lab.settings).model_fields:
        if name in SHOWN_APART:
            continue
        value = getattr(lab.settings, name)
        rows.append({"setting": name, "value": _text(value)})
    return pd.DataFrame(rows)


def _text(value: Any) -> str:
    if isinstance(value, SecretStr):
        return "set"
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, dict | list):
        return json.dumps(value, default=_plain, sort_keys=True)
    return "" if value is None else str(value)


def _plain(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else str(value)
