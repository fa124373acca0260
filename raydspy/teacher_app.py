"""The teacher's Serve app under its first import path, ``raydspy.teacher_app:build_openai_app``,
so Serve configs written before the package layout (`raydspy.teacher.app`) still deploy."""

from raydspy.teacher.app import build_openai_app

__all__ = ["build_openai_app"]
