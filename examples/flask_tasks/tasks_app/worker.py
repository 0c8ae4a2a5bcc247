"""Background worker: ``python -m tasks_app.worker``.

Takes queued jobs oldest first, runs them and marks them done. Sleeps briefly
when there is nothing to do. SIGTERM or SIGINT stop it after the current job.
Run a single worker.
"""

import logging
import os
import signal
import sys
import threading

from . import create_app
from .extensions import db
from .models import Job

IDLE_SLEEP = 0.5

log = logging.getLogger("tasks_app.worker")
stop = threading.Event()


def _request_stop(signum, _frame) -> None:
    log.info("received %s, stopping after the current job", signal.Signals(signum).name)
    stop.set()


def next_job() -> Job | None:
    query = (
        db.select(Job)
        .where(Job.status == "queued")
        .order_by(Job.created_at, Job.id)
        .limit(1)
    )
    return db.session.scalars(query).first()


def run_once() -> bool:
    """Run one queued job. Return False when the queue is empty."""
    job = next_job()
    if job is None:
        db.session.rollback()  # end the read transaction so new jobs are seen
        return False
    job.run()
    db.session.commit()
    summary = job.result if len(job.result) <= 60 else job.result[:57] + "..."
    log.info("job %s done kind=%s result=%r", job.id, job.kind, summary)
    return True


def main() -> int:
    logging.basicConfig(
        stream=sys.stdout,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)

    app = create_app()
    with app.app_context():
        log.info("worker started pid=%d", os.getpid())
        while not stop.is_set():
            try:
                worked = run_once()
            except Exception:
                db.session.rollback()
                log.exception("worker loop error")
                worked = False
            if not worked:
                stop.wait(IDLE_SLEEP)
        db.session.remove()
    log.info("worker stopped pid=%d", os.getpid())
    return 0


if __name__ == "__main__":
    sys.exit(main())
