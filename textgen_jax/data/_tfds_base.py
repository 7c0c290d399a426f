"""The TFDS builder base class shared by the embedded corpus and the user-files builder."""

from __future__ import annotations

import inspect

import tensorflow_datasets as tfds
from etils import epath


class LocalGeneratorBasedBuilder(tfds.core.GeneratorBasedBuilder):
    """A GeneratorBasedBuilder whose data is on this machine (nothing to download).

    It stays abstract (no `_info`), so TFDS does not register it as a dataset.
    """

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS's own lookup needs the `importlib_resources` backport, which this stack does
        # not depend on; the file of the class is what that lookup finds anyway.
        return epath.Path(inspect.getfile(cls))
