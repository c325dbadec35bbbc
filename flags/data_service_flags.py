"""absl flags of tools/data_service.py."""

from absl import flags

from flags.main_flags import _Definer


def define_data_service_flags(flag_values=None) -> None:
    d = _Definer(flag_values if flag_values is not None else flags.FLAGS)
    d.DEFINE_enum("role", None, ["dispatcher", "worker"],
                  "dispatcher: one per cluster, the address trainers get as "
                  "--data_service_address; worker: on each input host.")
    d.DEFINE_integer("port", None, "Port to serve on (dispatcher default 5050; worker default "
                     "0: any free port).")
    d.DEFINE_string("work_dir", None, "--role=dispatcher: a directory for its journal, so a "
                    "restarted dispatcher resumes its jobs (fault-tolerant mode).")
    d.DEFINE_string("dispatcher_address", None, "--role=worker: the dispatcher's host:port.")
    d.DEFINE_string("worker_address", None, "--role=worker: how trainers reach this worker, "
                    "host:port, where %port% stands for the port (default: this host's name).")


def data_service_args_from_flags(fv) -> dict:
    """The tool's only reading of its flags -> (role, keyword arguments of data/service.py's
    start_dispatcher or start_worker)."""
    import socket

    from noisy_student_tf.data import service
    from noisy_student_tf.errors import UserInputError

    if fv.role is None:
        raise UserInputError("--role is required: dispatcher or worker")
    if fv.port is not None and not 0 <= fv.port < 65536:
        raise UserInputError(f"--port={fv.port} is not a port number (0-65535)")
    if fv.role == "dispatcher":
        if fv.dispatcher_address or fv.worker_address:
            raise UserInputError("--dispatcher_address / --worker_address are for --role=worker")
        port = service.DEFAULT_PORT if fv.port is None else fv.port
        return {"role": "dispatcher", "port": port, "work_dir": fv.work_dir}
    if not fv.dispatcher_address:
        raise UserInputError("--role=worker needs --dispatcher_address=HOST:PORT")
    if fv.work_dir:
        raise UserInputError("--work_dir is for --role=dispatcher")
    service.normalize_address(fv.dispatcher_address, "dispatcher_address")  # one line if bad
    return {"role": "worker", "dispatcher": fv.dispatcher_address,
            "port": fv.port or 0,
            "worker_address": fv.worker_address or f"{socket.getfqdn()}:%port%"}
