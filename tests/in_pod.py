"""Python snippets run inside a pod's container, with `docker exec` (container tier) or
`kubectl exec` (kind tier): the images have no curl, but every one has python3. What they
print is parsed by the helpers beside them, so both tiers check the same things the same way.
"""

from __future__ import annotations

import json
from typing import Any


def http_get_script(url: str, timeout: float) -> str:
    """Python source that GETs `url` and prints the status, a newline and the body: run
    inside a container to reach its pod's localhost."""
    return _http_script(f"urllib.request.Request({url!r})", timeout)


def http_post_json_script(url: str, payload: Any, timeout: float) -> str:
    """Python source that POSTs `payload` as JSON to `url`; prints as http_get_script."""
    return _http_script(
        f"urllib.request.Request({url!r}, method='POST', data={json.dumps(payload).encode()!r},"
        " headers={'Content-Type': 'application/json'})",
        timeout,
    )


def _http_script(request: str, timeout: float) -> str:
    return (
        "import sys, urllib.request, urllib.error\n"
        "try:\n"
        f"    r = urllib.request.urlopen({request}, timeout={timeout})\n"
        "    status, body = r.status, r.read()\n"
        "except urllib.error.HTTPError as e:\n"
        "    status, body = e.code, e.read()\n"
        "except OSError as e:\n"
        "    status, body = 0, str(e).encode()\n"
        "sys.stdout.write(str(status) + '\\n' + body.decode(errors='replace'))\n"
    )


def parse_http_response(exit_code: int, output: str) -> tuple[int, str]:
    """(HTTP status, body) from what an http_*_script printed; status 0 when the script
    itself failed or the connection did."""
    if exit_code != 0:
        return 0, output
    status, _, body = output.partition("\n")
    return int(status), body


# Every ESTABLISHED TCP connection the container's own processes hold, as JSON
# [{"local": "ip:port", "remote": "ip:port"}]. /proc/net/tcp lists the whole (shared)
# network namespace; the fds under /proc/<pid> tell which sockets belong to this
# container's processes (a container sees only its own PIDs).
ESTABLISHED_TCP_SCRIPT = r"""
import json, os, socket, struct
inodes = set()
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        for fd in os.listdir(f'/proc/{pid}/fd'):
            target = os.readlink(f'/proc/{pid}/fd/{fd}')
            if target.startswith('socket:['):
                inodes.add(target[8:-1])
    except OSError:
        pass
def addr(text):
    host, port = text.split(':')
    if len(host) == 8:
        return socket.inet_ntoa(struct.pack('<I', int(host, 16))) + ':' + str(int(port, 16))
    return 'v6:' + host + ':' + str(int(port, 16))
found = []
for table in ('/proc/net/tcp', '/proc/net/tcp6'):
    for line in open(table).read().splitlines()[1:]:
        fields = line.split()
        if fields[9] in inodes and fields[3] == '01':  # ESTABLISHED
            found.append({'local': addr(fields[1]), 'remote': addr(fields[2])})
print(json.dumps(found))
"""
