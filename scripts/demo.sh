#!/usr/bin/env bash
# The demo: boot a local sandbox fleet (3 real Debian hosts with systemd and sshd), deploy the
# example SGP API to it, upgrade, break a release on purpose, roll back, clean up. Needs root.
# SGPFAB_DEMO_KEEP=1 leaves the fleet running afterwards (stop it with: .venv/bin/fab sandbox.down).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
fab=.venv/bin/fab
step() { printf '\n\033[1;36m==> %s\033[0m\n' "$*"; }

export SGPFAB_DIST=$(mktemp -d /tmp/sgpfab-demo-dist.XXXXXX)  # the demo's bundles, not your dist/
if [ "${SGPFAB_DEMO_KEEP:-0}" != 1 ]; then trap '$fab sandbox.down --name demo; rm -rf "$SGPFAB_DIST"' EXIT; fi
step "boot the sandbox fleet: staging1, prod1, prod2"
$fab sandbox.up --name demo --hosts 3
export SGPFAB_INVENTORY=/var/lib/sgpfab/sandbox/demo/inventory.yaml
ip() { awk -v h="$1" '$1=="Host"{c=$2} $1=="HostName"&&c==h{print $2}' /var/lib/sgpfab/sandbox/demo/ssh_config; }

step "build release bundles 1.0.4 and 1.0.5 once (tar.gz + wheels + SHA-256 manifest + CHANGELOG + schema.sql)"
$fab bundle --version 1.0.4
$fab bundle --version 1.0.5
ls "$SGPFAB_DIST/releases/v1.0.5"

step "deploy bundle 1.0.4 to the whole fleet"
$fab -H all deploy --bundle 1.0.4
step "write data through the API on prod1"
curl -fsS -X POST -H 'content-type: application/json' -d '{"name": "written under 1.0.4"}' "http://$(ip prod1):8000/items"; echo

step "deploy 1.0.5 to prod (fab -H prod1,prod2 deploy --version 1.0.5)"
$fab -H prod1,prod2 deploy --version 1.0.5   # reuses the identical bundle built above
step "the data is still there under 1.0.5"
curl -fsS "http://$(ip prod1):8000/health"; echo
curl -fsS "http://$(ip prod1):8000/items"; echo

step "deploy a broken 1.0.6 to prod1: it fails its health check and rolls itself back"
broken=$(mktemp -d)
cp -r examples/sgp_api/. "$broken"
cat >> "$broken/main.py" <<'PY'

@asynccontextmanager
async def _broken_lifespan(_app):
    raise RuntimeError("demo: this release cannot start")
    yield

app.router.lifespan_context = _broken_lifespan
PY
$fab -H prod1 deploy --version 1.0.6 --source "$broken" || echo "(deploy failed as expected; exit $?)"
rm -rf "$broken"
curl -fsS "http://$(ip prod1):8000/health"; echo

step "fleet status (exit code 2 here: staging and prod run different versions, which status flags as drift)"
$fab -H all status || echo "(status exit $?)"
step "roll prod back to the previous release"
$fab -H prod rollback
step "releases on every host"
$fab -H all list
step "back up the database, then the audit trail"
$fab -H prod1 backup --label demo
$fab -H prod1 list-backups
$fab -H all history
step "clean up, keeping 1 release (the active and previous ones are always kept)"
$fab -H all cleanup --keep 1
$fab -H all list
step "demo finished"
