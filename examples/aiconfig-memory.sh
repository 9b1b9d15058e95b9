#!/bin/sh
# aiconfig-style shell clients on lockwright: each `memory-update` is a jq-style
# read-modify-write of memory.json, guarded by `lockwright with`. Three clients write
# at once; no write is lost. Run: sh examples/aiconfig-memory.sh
set -eu

here=$(cd "$(dirname "$0")" && pwd)
lockwright=${LOCKWRIGHT:-"node $here/../bin/lockwright.js"}
dir=$(mktemp -d)
memory="$dir/memory.json"
echo '{"writes":0,"notes":[]}' > "$memory"

# memory-update <client> <n>: one locked update (the jq-style filter is a node one-liner).
memory_update() {
  $lockwright with "$memory" --owner "aiconfig-$1" -- node -e '
    const fs = require("fs"); const [file, client, n] = process.argv.slice(1)
    const m = JSON.parse(fs.readFileSync(file, "utf8"))
    m.writes += 1; m.notes.push(client + ":" + n)
    fs.writeFileSync(file, JSON.stringify(m))' "$memory" "$1" "$2"
}

client() {
  i=0
  while [ "$i" -lt 20 ]; do memory_update "$1" "$i"; i=$((i + 1)); done
}

client a & client b & client c &
wait

writes=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).writes)' "$memory")
$lockwright status "$memory"
rm -rf "$dir"
echo "aiconfig-style shell clients: $writes of 60 writes"
[ "$writes" -eq 60 ]
