#!/usr/bin/env bash
# The demo: boot a local sandbox fleet "demo" (3 real Debian hosts with systemd and sshd), deploy
# the three example apps of hosts/fleet.yaml to it (sgp: FastAPI, tasks: Flask + a worker, blog:
# Django), upgrade one through staging and promote it, watch a broken release roll itself back,
# then operate the fleet: status, JSON, logs, exec, settings, rollback, backup, history, cleanup.
# Needs root on Debian 12 (scripts/bootstrap.sh installs what is missing). The fleet is torn down
# at the end; SGPFAB_DEMO_KEEP=1 keeps it (stop it later with: .venv/bin/fab sandbox.down --name demo).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
fab=.venv/bin/fab
step() { printf '\n\033[1;36m==> %s\033[0m\n' "$*"; }
fleet_dir=/var/lib/sgpfab/sandbox/demo

SGPFAB_DIST=$(mktemp -d /tmp/sgpfab-demo-dist.XXXXXX)  # the demo's bundles, not your dist/
export SGPFAB_DIST
cleanup() {
  rm -rf "$SGPFAB_DIST" "${broken:-}"
  if [ "${SGPFAB_DEMO_KEEP:-0}" = 1 ]; then
    echo "fleet kept: export SGPFAB_INVENTORY=$fleet_dir/inventory.yaml; stop it with: $fab sandbox.down --name demo"
  else
    $fab sandbox.down --name demo
  fi
}
trap cleanup EXIT

step "boot the sandbox fleet 'demo': staging1, prod1, prod2 (groups staging and prod)"
$fab sandbox.up --name demo --hosts 3 --subnet 250
export SGPFAB_INVENTORY=$fleet_dir/inventory.yaml
ip() { awk -v h="$1" '$1=="Host"{c=$2} $1=="HostName"&&c==h{print $2}' "$fleet_dir/ssh_config"; }

step "the apps' secrets come from the controller's environment (SGPFAB_SECRET_<NAME>), never from a file in git"
SGPFAB_SECRET_TASKS_SECRET_KEY=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(32))')
SGPFAB_SECRET_BLOG_SECRET_KEY=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(32))')
export SGPFAB_SECRET_TASKS_SECRET_KEY SGPFAB_SECRET_BLOG_SECRET_KEY
echo "exported SGPFAB_SECRET_TASKS_SECRET_KEY and SGPFAB_SECRET_BLOG_SECRET_KEY (random, not shown)"

for app in sgp tasks blog; do
  step "deploy $app 1.0.0 to the whole fleet, all 3 hosts at once (bundle built once, verified on every host)"
  $fab -H all deploy --app "$app" --version 1.0.0 --parallel 3
done

step "use the apps on prod1: an item (sgp), a job for the worker (tasks), the blog's front page"
curl -fsS -X POST -H 'content-type: application/json' -d '{"name": "written under 1.0.0"}' "http://$(ip prod1):8000/items"; echo
curl -fsS -X POST -H 'content-type: application/json' -d '{"payload": "hello"}' "http://$(ip prod1):8001/jobs"; echo
sleep 3
curl -fsS "http://$(ip prod1):8001/jobs/1"; echo
curl -fsS -o /dev/null -w 'blog: HTTP %{http_code}\n' "http://$(ip prod1):8002/"

step "upgrade sgp: 1.1.0 to staging first, with per-step timings"
$fab -H staging deploy --app sgp --version 1.1.0 --timings

step "promote exactly that build (same digest) from staging to prod: a canary wave of 1 host, then the rest"
$fab promote --app sgp --from staging --to prod --version 1.1.0 --waves 1,100%
step "the data written under 1.0.0 is still there under 1.1.0"
curl -fsS "http://$(ip prod1):8000/items"; echo

step "deploy a broken sgp 1.2.0 to prod1: it fails its health check and rolls itself back"
broken=$(mktemp -d /tmp/sgpfab-demo-broken.XXXXXX)
cp -r examples/sgp_api/. "$broken"
cat >> "$broken/sgp_api/main.py" <<'PY'

from contextlib import asynccontextmanager


@asynccontextmanager
async def _broken_lifespan(_app):
    raise RuntimeError("demo: this release cannot start")
    yield


app.router.lifespan_context = _broken_lifespan
PY
if $fab -H prod1 deploy --app sgp --version 1.2.0 --source "$broken"; then
  echo "the broken release was NOT refused: this is a bug" >&2
  exit 1
else
  echo "(deploy failed as expected, exit $?; prod1 still serves 1.1.0)"
fi
curl -fsS "http://$(ip prod1):8000/health"; echo

step "fleet status of sgp (exit 0: every host healthy, one version)"
$fab -H all status --app sgp
step "the same as JSON for scripts (schema sgpfab/1): host, version, health"
$fab -H all status --app sgp --json \
  | .venv/bin/python -c 'import json, sys
d = json.load(sys.stdin)
print(d["schema"], d["kind"], "exit_code", d["exit_code"])
for h in d["hosts"]:
    print(" ", h["host"], h["version"], h["health"])'

step "the tasks app's last log lines on prod1 (web and worker)"
$fab -H prod1 logs --app tasks --lines 8
step "a one-off command in the blog's active release on prod (as the service user)"
$fab -H prod exec --app blog --command 'python manage.py showmigrations posts'
step "the tasks app's settings on prod1 (secrets masked)"
$fab -H prod1 settings --app tasks
step "a host-local setting on prod1, applied with a health-checked restart"
$fab -H prod1 settings-set --app tasks --env LOG_LEVEL=debug --restart

step "roll sgp on prod back to the previous release (1.0.0)"
$fab -H prod rollback --app sgp
step "status now flags the drift: staging runs 1.1.0, prod 1.0.0 (exit code 2)"
$fab -H all status --app sgp || echo "(status exit $?)"

step "back up sgp's database on prod1, list the backups, show the audit trail"
$fab -H prod1 backup --app sgp --label demo
$fab -H prod1 list-backups --app sgp
$fab -H prod1 history --app sgp --last 6

step "clean up, keeping 1 release (the active one and its rollback target are always kept)"
$fab -H all cleanup --app sgp --keep 1
$fab -H all list --app sgp
step "demo finished"
