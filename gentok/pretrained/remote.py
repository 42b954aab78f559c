"""Hub ids (`owner/name`) resolved through huggingface_hub and its cache, only when a user names one.

Nothing in gentok calls this by default. With `HF_HUB_OFFLINE=1`, or without a network, a snapshot that is not in the
cache fails at once with an error that says so and names the local-directory alternative.
"""

from __future__ import annotations

import re
from pathlib import Path

from gentok.checkpoint import CheckpointError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.md", "LICENSE*"]  # never pickles


def is_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text)) and not text.startswith((".", "/"))


def snapshot(repo_id: str, revision: str | None = None) -> Path:
    """The local snapshot directory of `repo_id` (downloaded into the huggingface_hub cache if needed)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=ALLOW_PATTERNS))
    except LocalEntryNotFoundError:
        raise CheckpointError(
            f"{repo_id}: not in the local Hugging Face cache, and the hub cannot be reached (offline, or "
            f"HF_HUB_OFFLINE=1). Download the snapshot where there is a network and pass its local directory "
            f"instead, e.g. gentok.load('/path/to/{repo_id.split('/')[-1]}')") from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"{repo_id}: no such repository on the hub (or it is private)") from None
    except (HfHubHTTPError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{repo_id}: {first}") from None
