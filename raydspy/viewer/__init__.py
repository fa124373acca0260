"""The rollout viewer: web pages over a run's committed rollouts, served by the HTTP service
(``/viewer``, behind its token) or by ``raydspy view OUTPUT`` over a local or ``s3://`` folder.

| module      | job                                                                          |
| ----------- | ---------------------------------------------------------------------------- |
| `filters`   | which rollouts to show (reward range, error type, example) as a pyarrow expression |
| `overview`  | a run's `RolloutStats` and its reward spread (the histogram), per part file |
| `output`    | queries over one output: pages of filtered rows, one rollout, card, manifests |
| `sources`   | where runs come from: the service's run manager, or output folders           |
| `auth`      | the bearer token, the login form's session cookie                            |
| `routes`    | the pages and the fragments they poll (Jinja2 templates in ``templates/``)   |
| `app`       | the viewer put into the service's app or into an app of its own               |

Static files: ``static/style.css``, ``static/viewer.js`` and ``static/vendor/`` (Chart.js, its
license; the versions are in ``frontend/package-lock.json``, refreshed by
``scripts/viewer_assets.sh``). Nothing is fetched from the internet by the pages.
"""

from raydspy.viewer.app import create_viewer_app, install_viewer
from raydspy.viewer.auth import ViewerAuth
from raydspy.viewer.filters import ANY_ERROR, NO_ERROR, RolloutFilter
from raydspy.viewer.output import OutputView
from raydspy.viewer.sources import FolderRuns, ServiceRuns

__all__ = [
    "create_viewer_app",
    "install_viewer",
    "ViewerAuth",
    "RolloutFilter",
    "NO_ERROR",
    "ANY_ERROR",
    "OutputView",
    "FolderRuns",
    "ServiceRuns",
]
