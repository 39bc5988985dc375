"""The Streamlit dashboard: ``flowcause dashboard --store PATH`` runs this script.

Pages are chosen in the sidebar or by URL, ``?page=<key>`` (keys in :data:`PAGES`), so a
link or a screenshot can open a given page directly.
"""

from __future__ import annotations

import streamlit as st

from dashboard.settings import Settings
from dashboard.views import overview, rca, scenario, timeline, traces

PAGES = {
    "overview": ("Pipeline", overview.render),
    "steps": ("Steps over time", timeline.render),
    "traces": ("Trace explorer", traces.render),
    "rca": ("Root cause", rca.render),
    "scenario": ("Scenario", scenario.render),
}


def main() -> None:
    st.set_page_config(page_title="flowcause", layout="wide")
    settings = Settings.from_env()
    keys = list(PAGES)
    wanted = st.query_params.get("page", "overview")
    page = st.sidebar.radio("Page", keys, index=keys.index(wanted) if wanted in keys else 0,
                            format_func=lambda k: PAGES[k][0])
    st.query_params["page"] = page
    st.sidebar.caption(f"trace store: `{settings.store or '(none)'}`")
    PAGES[page][1](settings)


if __name__ == "__main__":  # how Streamlit runs the script
    main()
