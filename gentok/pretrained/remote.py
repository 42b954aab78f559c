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


def download_file(repo_id: str, filename: str, revision: str | None = None) -> Path:
    """The local copy of one named file of `repo_id` (huggingface_hub's cache; downloaded if needed). Only weight
    files gentok can read are fetched: `.safetensors`, or a published `.bin` state dict."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    if not filename.endswith((".safetensors", ".bin")):
        raise CheckpointError(f"{repo_id}: filename must name a .safetensors or .bin weights file, got {filename!r}")
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision))
    except LocalEntryNotFoundError:
        raise CheckpointError(
            f"{repo_id}/{filename}: not in the local Hugging Face cache, and the hub cannot be reached (offline, or "
            f"HF_HUB_OFFLINE=1). Download it where there is a network and pass the local file instead, e.g. "
            f"gentok.load('/path/to/{filename}')") from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"{repo_id}: no such repository on the hub (or it is private)") from None
    except EntryNotFoundError:  # after LocalEntryNotFoundError, which is a kind of it
        raise CheckpointError(f"{repo_id} has no file {filename!r}") from None
    except (HfHubHTTPError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{repo_id}/{filename}: {first}") from None


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
