"""Base class for every typed config section.

Sections are pydantic models that reject unknown keys, so a typo in a YAML file is an error that names
the field instead of a silently ignored setting.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)
