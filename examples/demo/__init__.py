"""The demo product: a core service and a UI client, packaged as Greenlight releases.

`core.py` and `ui.py` are copied into release archives by `build.py` and run from the
installed release; `build.json` beside each carries the version and the fault knobs baked
into that build (`refuse-ui-token`, `crash-on-stop-in-flight`).
"""
