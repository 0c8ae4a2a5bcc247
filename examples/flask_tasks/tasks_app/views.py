from flask import Blueprint, abort, jsonify, request

from .extensions import db
from .models import JOB_KINDS, Job

bp = Blueprint("jobs", __name__)


@bp.get("/healthz")
def healthz():
    return "ok", 200, {"Content-Type": "text/plain; charset=utf-8"}


@bp.post("/jobs")
def create_job():
    data = request.get_json(silent=True)
    if not isinstance(data, dict) or not isinstance(data.get("payload"), str):
        return jsonify(error='expected a JSON object like {"payload": "some text"}'), 400
    kind = data.get("kind", "reverse")
    if kind not in JOB_KINDS:
        return jsonify(error=f"unknown kind {kind!r}; one of {', '.join(JOB_KINDS)}"), 400
    job = Job(kind=kind, payload=data["payload"], status="queued")
    db.session.add(job)
    db.session.commit()
    return jsonify(job.to_dict()), 201, {"Location": f"/jobs/{job.id}"}


@bp.get("/jobs/<int:job_id>")
def get_job(job_id: int):
    job = db.session.get(Job, job_id)
    if job is None:
        abort(404)
    return jsonify(job.to_dict())


@bp.get("/jobs")
def list_jobs():
    query = db.select(Job).order_by(Job.id)
    status = request.args.get("status")
    if status:
        query = query.where(Job.status == status)
    jobs = db.session.scalars(query).all()
    return jsonify([job.to_dict() for job in jobs])
