"""NSSM (2.24-101-g897c7ad) and the service control manager, acted out for the stand-in host.

What is modelled, and from where (NSSM's source, github.com/kirillkovalenko/nssm, a mirror of
git.nssm.cc, at commit 897c7ad = 2.24-101; 2.24 is commit 220d2b0):

* `nssm install NAME APP [ARGS...]`: a service with NSSM's defaults (Application=APP,
  AppParameters=ARGS joined by blanks, AppDirectory=APP's folder, ObjectName LocalSystem,
  startup automatic); exit 5 if it exists (service.cpp pre_install_service/install_service).
* `nssm set NAME PARAM [SUB] VALUE...`: several values are joined with one blank
  (pre_edit_service); AppExit needs its subparameter (ADDITIONAL_MANDATORY); DWORD settings must
  be numbers; Start takes SERVICE_AUTO_START, SERVICE_DELAYED_AUTO_START, SERVICE_DEMAND_START or
  SERVICE_DISABLED; ObjectName takes a username and a password, and no password only for
  LocalSystem/LocalService/NetworkService or the service's own virtual account
  `NT Service\\NAME` (compared case-insensitively; settings.cpp native_set_objectname,
  account.cpp is_virtual_account) -- anything else fails with "missing password".
* `nssm get NAME PARAM [SUB]`: prints the value (an unset one: its default) and a newline.
* Running a service (service.cpp start_service/throttle_restart/end_service): the first start
  is not delayed; the application is started with the command line `"Application"
  AppParameters` in AppDirectory; NSSM waits up to AppThrottle ms (default 1500) for it to
  exit early, then reports SERVICE_RUNNING (whether or not it exited); when it has run longer
  than AppThrottle the throttle count resets, and with AppRestartDelay set the count is then
  raised to 1 ("Ensure the restart delay is always applied"). When the application exits, the
  AppExit action for its code (Default: Restart) restarts it: a restart with a non-zero throttle
  count waits max(AppRestartDelay, 2^(count-1) s, at most 128 s) in SERVICE_PAUSED first.
* Stopping: SERVICE_STOP_PENDING, Ctrl+C to the application's console (here: SIGINT to its
  process group), AppStopMethodConsole ms (default 1500) to exit, then the process tree is
  killed (AppKillProcessTree=1); SERVICE_STOPPED.
* The service's process id (QueryServiceStatusEx's dwProcessId) is NSSM's own, constant while
  the service runs: an application restart does not change it.

Not modelled: WM_CLOSE and thread-termination stop stages, log rotation, hooks, priorities,
affinity, the GUI, `nssm start/stop` (sgpfab uses the service cmdlets), other AppExit codes.
"""

from __future__ import annotations

import itertools
import ntpath
import threading
import time
from collections.abc import Callable

STARTUP = ("SERVICE_AUTO_START", "SERVICE_DELAYED_AUTO_START", "SERVICE_DEMAND_START", "SERVICE_DISABLED")
EXIT_ACTIONS = ("Restart", "Ignore", "Exit", "Suicide")
WELL_KNOWN = (
    "localsystem",
    "nt authority\\system",
    "nt authority\\localservice",
    "nt authority\\networkservice",
    "localservice",
    "networkservice",
)
# name -> (kind, default) (settings.cpp `settings[]`)
SETTINGS = {
    "Application": ("string", ""),
    "AppParameters": ("string", ""),
    "AppDirectory": ("string", ""),
    "AppExit": ("exit", "Restart"),
    "AppRestartDelay": ("dword", 0),
    "AppThrottle": ("dword", 1500),
    "AppStdout": ("string", ""),
    "AppStderr": ("string", ""),
    "AppRotateFiles": ("dword", 0),
    "AppRotateOnline": ("dword", 0),
    "AppRotateSeconds": ("dword", 0),
    "AppRotateBytes": ("dword", 0),
    "AppStopMethodSkip": ("dword", 0),
    "AppStopMethodConsole": ("dword", 1500),
    "AppStopMethodWindow": ("dword", 1500),
    "AppStopMethodThreads": ("dword", 1500),
    "AppKillProcessTree": ("dword", 1),
    "AppNoConsole": ("dword", 0),
    "AppTimestampLog": ("dword", 0),
    "Description": ("string", ""),
    "DisplayName": ("string", ""),
    "ObjectName": ("objectname", "LocalSystem"),
    "Start": ("start", "SERVICE_AUTO_START"),
}
STATES = {
    "STOPPED": 1,
    "START_PENDING": 2,
    "STOP_PENDING": 3,
    "RUNNING": 4,
    "CONTINUE_PENDING": 5,
    "PAUSE_PENDING": 6,
    "PAUSED": 7,
}
PS_STATUS = {
    "STOPPED": "Stopped",
    "START_PENDING": "StartPending",
    "STOP_PENDING": "StopPending",
    "RUNNING": "Running",
    "CONTINUE_PENDING": "ContinuePending",
    "PAUSE_PENDING": "PausePending",
    "PAUSED": "Paused",
}


def throttle_ms(throttle: int) -> int:
    """service.cpp throttle_milliseconds."""
    throttle = min(throttle, 8)
    return 2 ** max(throttle - 1, 0) * 1000


class ServiceError(Exception):
    """What Start-Service / Stop-Service would throw."""


class Service:
    error: str  # why the application could not be started (set when that happens)

    def __init__(self, name: str, application: str, args: list[str]):
        self.name = name
        self.values: dict[str, str] = {
            "Application": application,
            "AppParameters": " ".join(args),
            "AppDirectory": ntpath.dirname(application) or application,
            "DisplayName": name,
        }
        self.exit_actions: dict[str, str] = {}
        self.state = "STOPPED"
        self.pid = 0
        self.proc = None
        self.throttle = 0
        self.stopping = False
        self.wake = threading.Event()
        self.started = threading.Event()
        self.thread: threading.Thread | None = None
        self.history: list[str] = []  # states, in order, for tests
        self.password: str | None = None  # what Win32_Service.Change stored (the SCM keeps it, NSSM does not)
        self.starts = 0  # application starts

    def get(self, name: str) -> str:
        return self.values.get(name, str(SETTINGS[name][1]))

    def number(self, name: str) -> int:
        return int(self.get(name))

    def set_state(self, state: str) -> None:
        self.state = state
        self.history.append(state)


class NSSM:
    """nssm.exe and the SCM. `launch(service)` starts the application (a Popen); `terminate(proc,
    grace)` stops it as NSSM would."""

    def __init__(self, launch, terminate, version: str = "2.24-101-g897c7ad"):
        self.launch, self.terminate, self.version = launch, terminate, version
        self.services: dict[str, Service] = {}
        self._pids = itertools.count(4000, 4)
        self.lock = threading.RLock()
        # the host's account check when a service starts (raises ServiceError)
        self.logon: Callable[[Service], None] | None = None

    # -- nssm.exe -------------------------------------------------------------------------------
    def command(self, argv: list[str]) -> tuple[str, str, int]:
        """nssm.exe with `argv` (what its C runtime parsed, program name excluded)."""
        if not argv:
            return "", "NSSM: The non-sucking service manager\r\nVersion %s 64-bit, 2017-04-26\r\n" % self.version, 1
        verb, rest = argv[0].lower(), argv[1:]
        if verb == "install":
            if len(rest) < 2:
                return "", "usage", 1
            with self.lock:
                if self._find(rest[0]):
                    return "", "Error creating service!\r\n", 5
                self.services[rest[0]] = Service(rest[0], rest[1], rest[2:])
            return f'Service "{rest[0]}" installed successfully!\r\n', "", 0
        if verb in ("get", "set"):
            return self._edit(verb, rest)
        if verb == "status":
            svc = self._find(rest[0]) if rest else None
            if not svc:
                return "", "OpenService(): The specified service does not exist as an installed service.\r\n", 3
            return "SERVICE_" + svc.state + "\r\n", "", 0
        return "", "unsupported in this emulation: " + verb, 1

    def _find(self, name: str) -> Service | None:
        for n, svc in self.services.items():
            if n.lower() == name.lower():
                return svc
        return None

    def _edit(self, verb: str, rest: list[str]) -> tuple[str, str, int]:
        mandatory = 2 if verb == "get" else 3  # service, parameter[, value] (argv minus the verb)
        if len(rest) < mandatory:
            return "", "usage", 1
        svc = self._find(rest[0])
        if not svc:
            return "", "OpenService(): The specified service does not exist as an installed service.\r\n", 3
        param = next((k for k in SETTINGS if k.lower() == rest[1].lower()), None)
        if param is None:
            return "", f'Invalid parameter "{rest[1]}"\r\n', 1
        kind, _ = SETTINGS[param]
        values = rest[2:]
        if kind == "exit":
            if not values or (verb == "set" and len(values) < 2):
                return "", f"Missing subparameter for {param}\r\n", 1
            sub, values = values[0], values[1:]
        if verb == "get":
            if kind == "exit":
                return svc.exit_actions.get(sub, "Restart" if sub == "Default" else "") + "\n", "", 0
            return svc.get(param) + "\n", "", 0
        value = " ".join(values)
        if kind == "dword" and not value.isdigit():
            return "", f'Error setting parameter "{param}"\r\n', 6
        if kind == "start" and value not in STARTUP:
            return "", f'Error setting parameter "{param}"\r\n', 6
        if kind == "exit":
            if value not in EXIT_ACTIONS:
                return "", f'Error setting parameter "{param}"\r\n', 6
            svc.exit_actions[sub] = value
            return f'Set parameter "{param}" for service "{svc.name}".\r\n', "", 0
        if kind == "objectname":
            user, password = values[0], (" ".join(values[1:]) if len(values) > 1 else None)
            virtual = user.lower() == f"nt service\\{svc.name}".lower()
            if user.lower() not in WELL_KNOWN and not virtual and password is None:
                return "", f"Password for {param} not specified!\r\n", 6  # NSSM_MESSAGE_MISSING_PASSWORD
            value = user
        svc.values[param] = value
        return f'Set parameter "{param}" for service "{svc.name}".\r\n', "", 0

    # -- the service control manager (what Get-Service, Start-Service, Stop-Service see) -------
    def exists(self, name: str) -> bool:
        return self._find(name) is not None

    def names(self) -> list[str]:
        return list(self.services)

    def status(self, name: str) -> str:
        svc = self._find(name)
        assert svc is not None, f"no service {name}"
        return PS_STATUS[svc.state]

    def query(self, name: str) -> tuple[int, int] | None:
        """(dwCurrentState, dwProcessId), or None when there is no such service."""
        svc = self._find(name)
        return None if svc is None else (STATES[svc.state], svc.pid if svc.state != "STOPPED" else 0)

    def start(self, name: str, timeout: float = 60) -> None:
        svc = self._find(name)
        if svc is None:
            raise ServiceError(f"Cannot find any service with service name '{name}'.")
        if svc.get("Start") == "SERVICE_DISABLED":
            raise ServiceError(f"Service '{name}' cannot be started: it is disabled.")
        if svc.state != "STOPPED":
            return  # Start-Service on a started service does nothing
        if self.logon is not None:
            self.logon(svc)  # the SCM logs the account on before NSSM runs
        svc.stopping, svc.throttle = False, 0
        svc.wake.clear()
        svc.started.clear()
        svc.pid = next(self._pids)
        svc.set_state("START_PENDING")
        svc.thread = threading.Thread(target=self._main, args=(svc,), name=f"nssm-{name}", daemon=True)
        svc.thread.start()
        if not svc.started.wait(timeout):
            raise ServiceError(f"Service '{name}' did not start in time")
        if svc.state == "STOPPED":
            raise ServiceError(f"Service '{name}' cannot be started: the application could not be started.")

    def _main(self, svc: Service) -> None:
        while not svc.stopping:
            # throttle_restart
            before, svc.throttle = svc.throttle, svc.throttle + 1
            if before:
                delay = max(svc.number("AppRestartDelay"), throttle_ms(svc.throttle))
                svc.set_state("PAUSED")
                svc.wake.wait(delay / 1000)
                if svc.stopping:
                    break
            if svc.state != "START_PENDING":
                svc.set_state("START_PENDING")
            try:
                proc = self.launch(svc)
            except Exception as e:  # CreateProcess() or the output handles failed: the service stops
                svc.error = str(e)
                svc.set_state("STOPPED")
                svc.started.set()
                return
            svc.proc = proc
            svc.starts += 1
            try:
                proc.wait(svc.number("AppThrottle") / 1000)
            except Exception:  # still running after AppThrottle: a clean start
                svc.throttle = 0
            if svc.stopping:
                break
            svc.set_state("RUNNING")
            svc.started.set()
            if svc.number("AppRestartDelay") and not svc.throttle:
                svc.throttle += 1
            code = proc.wait()
            if svc.stopping:
                break
            action = svc.exit_actions.get(str(code), svc.exit_actions.get("Default", "Restart"))
            if action == "Exit":
                svc.set_state("STOPPED")
                return
            if action == "Ignore":
                svc.wake.wait()
                break
        svc.started.set()

    def stop(self, name: str) -> None:
        svc = self._find(name)
        if svc is None or svc.state == "STOPPED":
            return
        svc.stopping = True
        svc.set_state("STOP_PENDING")
        svc.wake.set()
        if svc.proc is not None and svc.proc.poll() is None:
            self.terminate(svc.proc, svc.number("AppStopMethodConsole") / 1000)
        if svc.thread is not None:
            svc.thread.join(30)
        svc.proc = None
        svc.set_state("STOPPED")

    def stop_all(self) -> None:
        for name in list(self.services):
            self.stop(name)

    def wait_state(self, name: str, state: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            svc = self._find(name)
            assert svc is not None, f"no service {name}"
            if svc.state == state:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} is {svc.state}, not {state}")
            time.sleep(0.05)
