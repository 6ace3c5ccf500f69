"""Files from the Hugging Face Hub: taken from the local Hugging Face cache, else downloaded into ours.

timm publishes its pretrained weights as `model.safetensors` in one Hub
repository per pretrained tag (`timm/eca_nfnet_l0.ra2_in1k`), served at
`<endpoint>/<repo_id>/resolve/main/model.safetensors`. `fetch` looks for the
file where `huggingface_hub` keeps it (so a user who has run timm needs no
download), then in this package's cache (`<$KERAS_HOME or ~/.keras>/models/nfnet_keras/`,
the folder of DeepMind's checkpoints), and downloads it there with
`keras.utils.get_file` only when neither has it. `huggingface_hub` is not needed.

The endpoint is `$NFNET_KERAS_HUB_ENDPOINT`, else `$HF_ENDPOINT` (a mirror
that timm users may have set already), else https://huggingface.co; a
`file://` endpoint serves a local folder laid out like the Hub (the tests use one).
"""

import dataclasses
import hashlib
import os

from nfnet_keras.weights.loading import WeightsDownloadError

__all__ = [
    "DEFAULT_ENDPOINT",
    "ENDPOINT_ENV",
    "HubFile",
    "download_file",
    "endpoint",
    "fetch",
    "find_in_hf_cache",
    "hf_hub_cache",
    "keras_cache_folder",
]

DEFAULT_ENDPOINT = "https://huggingface.co"
#: The environment variable that overrides the Hub endpoint (like `huggingface_hub`'s `HF_ENDPOINT`).
ENDPOINT_ENV = "NFNET_KERAS_HUB_ENDPOINT"


@dataclasses.dataclass(frozen=True)
class HubFile:
    """One file of a Hub model repository, with what is known about it.

    Attributes:
        repo_id: `"timm/eca_nfnet_l0.ra2_in1k"`.
        filename: the file in the repository.
        sha256: its sha256 (hex), checked after a download when known.
        size: its size in bytes, checked after a download when known.
    """

    repo_id: str
    filename: str = "model.safetensors"
    sha256: str | None = None
    size: int | None = None

    @property
    def cache_name(self):
        """Its file name in this package's cache: `timm--eca_nfnet_l0.ra2_in1k--model.safetensors`."""
        return "--".join(self.repo_id.split("/") + [self.filename])

    def url(self):
        """`<endpoint>/<repo_id>/resolve/main/<filename>`, with the current `endpoint()`."""
        return f"{endpoint()}/{self.repo_id}/resolve/main/{self.filename}"


def endpoint():
    """The Hub endpoint: `$NFNET_KERAS_HUB_ENDPOINT`, `$HF_ENDPOINT` or `DEFAULT_ENDPOINT`, without a final /."""
    return (os.environ.get(ENDPOINT_ENV) or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hf_hub_cache():
    """The folder `huggingface_hub` caches repositories in, resolved as `huggingface_hub.constants` does.

    `$HF_HUB_CACHE`, else `$HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, else
    `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
    """
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface"
    )
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return os.path.expandvars(os.path.expanduser(cache))


def find_in_hf_cache(hub_file, cache=None):
    """The path of `hub_file` in the Hugging Face cache at the revision `main` names, or None.

    The layout is `models--<owner>--<name>/refs/main` (a commit hash) and
    `models--<owner>--<name>/snapshots/<commit>/<filename>` (a link into
    `blobs/`), as `huggingface_hub.try_to_load_from_cache` reads it.

    Args:
        hub_file: a `HubFile`.
        cache: the cache folder; default `hf_hub_cache()`.
    """
    repo = os.path.join(cache or hf_hub_cache(), "models--" + hub_file.repo_id.replace("/", "--"))
    try:
        with open(os.path.join(repo, "refs", "main")) as handle:
            revision = handle.read().strip()
    except OSError:
        return None
    path = os.path.join(repo, "snapshots", revision, hub_file.filename)
    return path if revision and os.path.isfile(path) else None


def keras_cache_folder(cache_dir=None):
    """`<cache_dir>/models/nfnet_keras` (`cache_dir`: `$KERAS_HOME` or `~/.keras`), created if absent."""
    cache_dir = cache_dir or os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    folder = os.path.join(os.path.expanduser(cache_dir), "models", "nfnet_keras")
    # get_file receives `folder` as an absolute cache_subdir: it saves there, never in its temp-dir fallback.
    os.makedirs(folder, exist_ok=True)
    return folder


def fetch(hub_file, cache_dir=None):
    """The local path of `hub_file`: from the Hugging Face cache, from ours, or downloaded into ours.

    Args:
        hub_file: a `HubFile`.
        cache_dir: the Keras cache root (default `$KERAS_HOME` or `~/.keras`).

    Raises:
        WeightsDownloadError: one line naming the file, the URL and the
            reason, and where to put the file by hand.
    """
    found = find_in_hf_cache(hub_file)
    if found is not None:
        return found
    return download_file(
        hub_file.cache_name,
        hub_file.url(),
        keras_cache_folder(cache_dir),
        file_hash=hub_file.sha256,
        hash_algorithm="sha256",
        size=hub_file.size,
    )


def download_file(file_name, url, folder, file_hash=None, hash_algorithm="sha256", size=None, hash_note=""):
    """`folder/file_name`, fetched from `url` with `keras.utils.get_file` unless it is there (with the right hash).

    Args:
        file_name: the name in `folder`.
        url: where to fetch it from (`https://`, `http://` or `file://`).
        folder: an absolute folder (`keras_cache_folder()`).
        file_hash: the expected hash (hex), or None to take the file as it comes.
        hash_algorithm: `"sha256"` or `"md5"`.
        size: the expected size in bytes, or None.
        hash_note: appended to the message of a wrong hash (where the expected values come from).

    Raises:
        WeightsDownloadError: one line naming the file, the URL and the reason
            (or the file and both hashes or sizes), and where to put the file by hand.
    """
    import keras  # noqa: PLC0415  (importing this module needs no backend)

    target = os.path.join(folder, file_name)  # where get_file keeps it (cache_subdir is absolute)
    try:
        path = keras.utils.get_file(
            file_name, url, file_hash=file_hash, hash_algorithm=hash_algorithm, cache_subdir=folder
        )
    except Exception as error:  # get_file raises a bare Exception for every URL error
        # get_file deletes a partial download; a complete one that stays failed the hash check.
        actual = _file_hash(target, hash_algorithm) if file_hash and os.path.isfile(target) else None
        if actual is not None and actual != file_hash:
            raise WeightsDownloadError(
                f"the downloaded {file_name} ({target}, from {url}) has {hash_algorithm} {actual}, expected "
                f"{file_hash}: an incomplete or corrupt download (the next try fetches it again), or a changed "
                f"file{hash_note}"
            ) from error
        raise WeightsDownloadError(
            f"cannot download {file_name} from {url} ({_first_line_of_cause(error)}): put the file at {target} "
            "by hand, or pass its path as the weights (--weights PATH)"
        ) from error
    actual_size = os.path.getsize(path)
    if size is not None and actual_size != size:
        os.remove(path)  # so that the next try fetches it again
        raise WeightsDownloadError(
            f"the downloaded {file_name} ({target}, from {url}) has {actual_size} bytes, expected {size}: an "
            "incomplete download (removed; the next try fetches it again), or a changed file"
        )
    return path


def _file_hash(path, algorithm):
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _first_line_of_cause(error):
    """The first line of the innermost exception of `error`'s chain with a message (the reason)."""
    chain = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    for cause in reversed(chain):
        lines = str(cause).strip().splitlines()
        if lines:
            return lines[0]
    return type(chain[0]).__name__
