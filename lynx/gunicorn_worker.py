"""gunicorn's threaded worker, made indifferent to clients that send their request head slowly.

The stock gthread worker hands a connection to a thread as soon as its first byte arrives, and the thread
then blocks until the whole head is in: a dozen clients trickling a header line every few seconds held
every thread of `make run`'s two workers, and /healthz timed out. Here a thread only reads what has
already arrived, without blocking; until the blank line that ends the head is in, the connection goes
back to the worker's poller (gthread's own "defer" path), holding no thread. A head still incomplete
after LYNX_HEAD_TIMEOUT_SECONDS (default 10) is cut off. Bodies are read as gunicorn always does; in
production nginx buffers them (docker-compose.yml).
"""

from __future__ import annotations

import os
import socket
import time

from gunicorn.workers.gthread import _DEFER, TConn, ThreadWorker

HEAD_TIMEOUT_SECONDS = float(os.environ.get("LYNX_HEAD_TIMEOUT_SECONDS", "10"))
# Far above any real head (Lynx's cookies are small), far below what would cost memory.
MAX_HEAD_BYTES = 256 * 1024
_HEAD_ENDS = (b"\r\n\r\n", b"\n\n")


class HeadTimeoutThreadWorker(ThreadWorker):
    def handle(self, conn: TConn):  # noqa: ANN201 - True/False/_DEFER, as gunicorn's own
        head = self._read_available_head(conn)
        if head is None:
            return False  # closed by the client, or cut off
        if not head:
            # Incomplete: back to the poller until more arrives (a stopping worker just closes it).
            return _DEFER if self.alive else False
        conn.head_deadline = None
        return super().handle(conn)

    def _read_available_head(self, conn: TConn) -> bool | None:
        """Reads what the socket holds now into gunicorn's own buffer for this connection; True when
        the head is complete, False when more must come, None when the connection is done for."""
        now = time.monotonic()
        if getattr(conn, "head_deadline", None) is None:
            conn.head_deadline = now + HEAD_TIMEOUT_SECONDS
        conn.init()  # the parser, whose buffer the bytes go to (done once per connection)
        buffer = conn.parser.unreader.buf
        conn.sock.setblocking(False)
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            data = None
        except OSError:
            return None
        finally:
            conn.sock.setblocking(True)
        if data == b"":
            return None
        if data:
            buffer.seek(0, os.SEEK_END)
            buffer.write(data)
        seen = buffer.getvalue()
        if any(end in seen for end in _HEAD_ENDS):
            return True
        if now > conn.head_deadline or len(seen) > MAX_HEAD_BYTES:
            self.log.warning(
                "closing %s: request head incomplete after %.0f s", conn.client, HEAD_TIMEOUT_SECONDS
            )
            # Shut down here, in the thread: gunicorn's graceful close, on the worker's main loop,
            # would otherwise linger reading from a client that is still trickling.
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return None
        conn.data_ready = False
        return False
