"""The verdict of a drift summary as HTML, without Evidently (cheap: used for windows with nothing to plot)."""

from __future__ import annotations

import html

from shared_code.monitoring.summary import DriftSummary


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def summary_table_html(summary: DriftSummary) -> str:
    """The verdict and one line per signal, as an HTML fragment."""
    verdict = "DRIFT" if summary.drift else "no drift"
    lines = [
        "<section style='font-family:sans-serif;margin:16px;padding:12px;border:2px solid "
        f"{'#c0392b' if summary.drift else '#27ae60'}'>",
        f"<h2>Drift window {html.escape(summary.window_id or '(offline comparison)')}: {verdict}</h2>",
        f"<p>Model {html.escape(summary.model_name or '?')} {html.escape(summary.model_version or '')}; "
        f"{summary.reference_rows} reference rows, {summary.current_rows} current rows; status "
        f"{html.escape(summary.status)}; drift share {summary.drift_share:.2f}; signals: "
        f"{html.escape(', '.join(summary.signals) or 'none')}; retraining requested: {summary.retraining_requested}"
        "</p>",
        "<table border='1' cellpadding='4' style='border-collapse:collapse'><tr><th>signal</th><th>test</th>"
        "<th>statistic</th><th>p-value</th><th>alpha</th><th>effect</th><th>min effect</th><th>reference</th>"
        "<th>current</th><th>drifted</th></tr>",
    ]
    for detail in summary.details:
        lines.append(
            f"<tr><td>{html.escape(detail.name)}</td><td>{html.escape(detail.test)}</td><td>{detail.statistic:.4g}"
            f"</td><td>{detail.p_value:.3g}</td><td>{detail.alpha:.3g}</td><td>{detail.effect:.4g}</td>"
            f"<td>{detail.min_effect:.3g}</td><td>{_number(detail.reference_value)}</td>"
            f"<td>{_number(detail.current_value)}</td>"
            f"<td>{'yes' if detail.drifted else ''}</td></tr>"
        )
    lines.append("</table></section>")
    return "\n".join(lines)


def summary_only_html(summary: DriftSummary) -> str:
    """A standalone page with the verdict only (no data to plot, or Evidently failed)."""
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Drift report</title></head><body>" \
           f"{summary_table_html(summary)}</body></html>"
