"""What the hub lists for the published checkpoint at the pinned commit, as public pages state it.

Source: the repository's commit and file pages on huggingface.co (dahara1/llama3.1-8b-Instruct-
amd-npu, read 2026-12). The hub test double (:meth:`npulab.testing.hub_server.HubServer.
add_published`) serves exactly this listing, so the tests exercise the real layout, and the drift
job (:func:`npulab.ci.drift.check_listing`) compares the live listing with it on hardware nights:
if the two part, the double is out of date and says so.

A ``size`` of None means no public page states the exact byte count (the files page rounds:
tokenizer.json ~9.5 MB, tokenizer_config.json ~53 kB); the drift job reports the live value so it
can be filled in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ListedFile:
    path: str
    #: Bytes, when a public page states them exactly.
    size: int | None
    #: The Git LFS pointer's sha256 (None: a plain git file, listed by blob id only).
    lfs_sha256: str | None = None

    @property
    def lfs(self) -> bool:
        return self.lfs_sha256 is not None


REPO_ID = "dahara1/llama3.1-8b-Instruct-amd-npu"
#: Newest commit of main (2024-08-04, README only).
REVISION = "d5dec729c215c026698642143c4724706d6cd450"
#: The commit that uploaded the checkpoint (an older ``pytorch_llama3.1_8b_w_bit_4_awq_amd.pt``
#: was deleted later).
CHECKPOINT_COMMIT = "779eb5c119fdfbc6b3ffd935bceac305f9975302"
CHECKPOINT = "llama3.1_8b_w_bit_4_awq_amd.pt"

FILES: tuple[ListedFile, ...] = (
    ListedFile(
        CHECKPOINT,
        11491208228,
        "837bb63fa009422a83297b350c18ef0bf526c290d2318b3c0024e99a8c06685b",
    ),
    ListedFile("tokenizer.json", None),
    ListedFile("tokenizer_config.json", None),
    ListedFile("special_tokens_map.json", 312),
    ListedFile("README.md", None),
    ListedFile("llama-3.1.png", None),
    ListedFile(".gitattributes", None),
)
