"""tools/filter_unlabel.py, SIGKILLed by itself once its output pass has written N records (the
crash test of tests/test_filter.py). The fault is injected here, not in the library: the output
writer is wrapped to count records.

    python tests/filter_killed.py N <filter_unlabel.py flags>
"""

import os
import runpy
import signal
import sys

from noisy_student_tf.pseudo import filter as filter_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _KillingWriter:
    def __init__(self, writer, limit: int):
        self.writer, self.limit, self.written = writer, limit, 0

    def write(self, record):
        self.writer.write(record)
        self.written += 1
        if self.written >= self.limit:
            self.writer.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    def __getattr__(self, name):
        return getattr(self.writer, name)


def main():
    limit = int(sys.argv[1])
    original = filter_lib._ShuffledWriter.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.writer = _KillingWriter(self.writer, limit)

    filter_lib._ShuffledWriter.__init__ = init
    tool = os.path.join(ROOT, "tools", "filter_unlabel.py")
    sys.argv = [tool, *sys.argv[2:]]
    runpy.run_path(tool, run_name="__main__")


if __name__ == "__main__":
    main()
