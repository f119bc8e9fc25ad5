"""Pages for clusters, deployments, models and operations: permission, form, one service call, redirect.

One module per area; `deployments/urls.py` names every view.
"""
