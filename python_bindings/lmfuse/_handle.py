"""Closeable: the with-statement and garbage-collection protocol of every object that owns a C handle.

A subclass defines ``close()`` (idempotent; frees the handle); ``with obj:`` closes on exit and the
object closes itself when garbage-collected (errors at interpreter shutdown are ignored).
"""


class Closeable:
    def close(self):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown, or a half-constructed object
            pass
