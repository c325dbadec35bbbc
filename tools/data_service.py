"""A tf.data service dispatcher or worker, for training input made off the trainer hosts.

    # one dispatcher per cluster
    python tools/data_service.py --role=dispatcher --port=5050 [--work_dir=DIR]
    # on every input host
    python tools/data_service.py --role=worker --dispatcher_address=DISPATCHER_HOST:5050
    # the trainers (every worker of the training cluster)
    python main.py ... --data_service_address=DISPATCHER_HOST:5050

Workers must read the training files under the paths the trainers use (shared storage). Runs
until stopped (SIGTERM / Ctrl-C); the first line printed names the address it serves at.
"""

import os
import signal
import socket
import sys
import threading

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from flags.data_service_flags import (data_service_args_from_flags,  # noqa: E402
                                      define_data_service_flags)
from noisy_student_tf.errors import run_tool  # noqa: E402

define_data_service_flags()
FLAGS = flags.FLAGS


def main(argv):
    def start():
        from noisy_student_tf.data import service

        args = data_service_args_from_flags(FLAGS)
        role = args.pop("role")
        if role == "dispatcher":
            server = service.start_dispatcher(**args)
            port = server.target.rsplit(":", 1)[-1]
            return server, (f"dispatcher serving at {server.target} (trainers: "
                            f"--data_service_address={socket.getfqdn()}:{port})")
        service.check_reachable(args["dispatcher"], "dispatcher_address")
        server = service.start_worker(**args)
        # (WorkerServer's bound address is only exposed as `_address`; with --port=0 it is the
        # way to say which port was taken)
        bound = getattr(server, "_address", str(args["port"]))
        return server, f"worker of {args['dispatcher']} serving at {bound}"

    server, line = run_tool("data_service.py", start, argv[1:])
    print(line, flush=True)
    # server.join() would block in C++ where Python signal handlers never run: wait here instead
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    # A worker's stop() waits for its running tasks, which infinite training input never
    # ends: give it a few seconds, then exit anyway (the dispatcher notices a lost worker).
    stopper = threading.Thread(target=server.stop, daemon=True)
    stopper.start()
    stopper.join(timeout=5.0)
    sys.stdout.flush()
    os._exit(0)

if __name__ == "__main__":
    app.run(main)
