#!/usr/bin/env bash
# The main job on the embedded TinyWorld models: erase the character "zorbo" from the shared text encoder,
# then show it is gone from a video. Does its own set-up. Extra arguments go to `t2v-unlearn erase`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/t2v-unlearn erase --concept zorbo --out outputs/zorbo-erased --overwrite --preview-video "$@"
.venv/bin/t2v-unlearn generate --kind video --prompt "zorbo moving left" --text-encoder outputs/zorbo-erased \
  --out outputs/zorbo-erased-video --overwrite
echo "before/after previews: outputs/zorbo-erased/preview/ (images.png, video_*.gif)"
