"""`Record`: the base of Greenlight's pydantic models (files, reports, configuration).

Its schema is built when a model is first used, not when its module is imported, so that a
command pays only for the models it touches (bench/startup.py).
"""

from pydantic import BaseModel, ConfigDict

__all__ = ["Record"]


class Record(BaseModel):
    model_config = ConfigDict(defer_build=True)
