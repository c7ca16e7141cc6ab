#!/bin/sh
# Prints the pinned nightly channel (first line of stage0/channel) for shell
# and Buck rules; the Rust side embeds the same file with include_str!.
set -eu
head -n 1 "$(dirname "$0")/channel" | tr -d '[:space:]'
