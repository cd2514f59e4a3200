"""Check a model source before any work: a folder with ``config.json``, or a hub id that resolves.

transformers only finds out that ``model.id`` points nowhere when it loads the model, which in the
workflow is after the manifest, the questions and the preprocessing, and then says "Repo id must be
in the form ...". :func:`check_model_source` answers in a moment, with one line naming the source
and the reason, so that the command line and the workflow can refuse a wrong model at the start.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cxr_attention.io import ConfigError

__all__ = ["ModelSourceError", "check_model_source"]

_CONFIG = "config.json"


class ModelSourceError(ConfigError):
    """The model is neither a folder with a ``config.json`` nor a hub id that resolves."""


def check_model_source(model_id: str | os.PathLike) -> str:
    """Check that ``model_id`` names a loadable model, without loading it.

    Parameters
    ----------
    model_id : str or path-like
        A model folder (it must hold ``config.json``) or a Hugging Face hub id
        (``owner/name``). A hub id passes when its ``config.json`` is in the local Hugging Face
        cache, or, unless ``HF_HUB_OFFLINE`` is set, when the hub serves it to this user (the
        file, a few KB, then lands in the cache).

    Returns
    -------
    str
        ``"folder"`` or ``"hub"``: what the source is.

    Raises
    ------
    ModelSourceError
        With a one-line message naming the source and the reason: a folder without
        ``config.json``, a path that does not exist and is no well-formed hub id, a hub id not in
        the cache while offline, an unknown or gated repository, or a hub that cannot be reached.
    """
    source = os.fspath(model_id)
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / _CONFIG).is_file():
            raise ModelSourceError(f"model {source}: the folder holds no {_CONFIG}")
        return "folder"
    if path.exists():
        raise ModelSourceError(f"model {source}: a file, not a model folder or hub id")
    _check_hub_id(source)
    return "hub"


def _check_hub_id(repo_id: str) -> None:
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        RepositoryNotFoundError,
    )
    from huggingface_hub.utils import validate_repo_id

    nowhere = f"model {repo_id}: no such folder"
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise ModelSourceError(f"{nowhere}, and not a hub id (owner/name)") from None
    if "/" not in repo_id:
        # Every hub model lives under an owner; a bare word is a mistyped folder.
        raise ModelSourceError(f"{nowhere}, and not a hub id (owner/name)")
    if isinstance(try_to_load_from_cache(repo_id, _CONFIG), str):
        return
    if constants.is_offline_mode():
        raise ModelSourceError(
            f"{nowhere}, and not in the Hugging Face cache ({constants.HF_HUB_CACHE}) while "
            "HF_HUB_OFFLINE is set"
        )
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)  # its retry messages would bury the one-line answer
    try:
        hf_hub_download(repo_id, _CONFIG, etag_timeout=10)
    except GatedRepoError:
        raise ModelSourceError(
            f"model {repo_id}: a gated repository; accept its terms on huggingface.co and log in "
            "with `.venv/bin/hf auth login`"
        ) from None
    except RepositoryNotFoundError:
        raise ModelSourceError(
            f"{nowhere}, and no such repository on the hub (or it is private: "
            "`.venv/bin/hf auth login`)"
        ) from None
    except Exception as error:  # network down, proxy, ...: say why in one line
        raise ModelSourceError(
            f"{nowhere}, not in the Hugging Face cache, and the hub cannot be asked "
            f"({_root_cause(error)})"
        ) from None
    finally:
        hub_logger.setLevel(level)


def _root_cause(error: BaseException) -> str:
    """The innermost exception's first line (e.g. ``[Errno -2] Name or service not known``)."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
