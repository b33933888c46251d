"""The training configuration: one typed dataclass, read from YAML and merged with CLI flags.

Three modules, imports pointing one way (sources -> schema -> values):

- ``schema``: ``TrainConfig``, whose fields carry their option schema (``setting(...)``), and what
  follows from it: FIELDS, SETTINGS, DEFAULTS, RESUMABLE, each key's flag and the default help shows.
- ``values``: how a flag's text becomes a value (the ``Kind``s), the range checks, the allowed words
  (DEVICES, PRECISIONS), and plain values checked against a field's type.
- ``sources``: a YAML file, command-line flags and Python values resolved into one ``TrainConfig``
  (defaults < config file < flags) and validated; back out as argv (``to_argv``) and YAML (``dump``).

Import from here; the names below are the package's interface.
"""

from mtlcli.config.schema import (BUNDLED_MODEL, DEFAULTS, FIELDS, RESUMABLE, SAVED_MAX_LENGTH, SETTINGS, Setting,
                                  TrainConfig, default_shown, flag_of, is_argument, resume_rule, setting)
from mtlcli.config.sources import (check_values, dump, read_config_file, read_flags, resolve, to_argv,
                                   validate)
from mtlcli.config.values import (CLASS_WEIGHTS, DEVICES, PRECISIONS, PREDICT_PRECISIONS, SWITCH, Kind, is_choice,
                                  read_number, read_whole_number)

__all__ = [
    "BUNDLED_MODEL",
    "CLASS_WEIGHTS",
    "DEFAULTS",
    "DEVICES",
    "FIELDS",
    "PRECISIONS",
    "PREDICT_PRECISIONS",
    "RESUMABLE",
    "SAVED_MAX_LENGTH",
    "SETTINGS",
    "SWITCH",
    "Kind",
    "Setting",
    "TrainConfig",
    "check_values",
    "default_shown",
    "dump",
    "flag_of",
    "is_argument",
    "is_choice",
    "read_config_file",
    "read_flags",
    "read_number",
    "read_whole_number",
    "resolve",
    "resume_rule",
    "setting",
    "to_argv",
    "validate",
]
