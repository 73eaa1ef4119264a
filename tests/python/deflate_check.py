"""An independent client for the deflate check: Debian's python3-websockets.

It negotiates permessage-deflate as that library does by default, speaks the
Centrifugo JSON protocol by hand, subscribes to one channel and prints, one
JSON object per line: the negotiated extensions, then the data of every
publication (the cached one first), until it has COUNT of them.

env: EDGERELAY_URL, CHANNEL, COUNT
"""
import asyncio
import json
import os
import sys

import websockets


async def main():
    url, channel, count = os.environ["EDGERELAY_URL"], os.environ["CHANNEL"], int(os.environ["COUNT"])
    async with websockets.connect(url, max_size=1 << 20) as ws:
        ext = [type(e).__name__ + repr(vars(e)) for e in ws.extensions]
        print(json.dumps({"extensions": ext}), flush=True)
        await ws.send(json.dumps({"id": 1, "connect": {"name": "python-websockets"}}) + "\n" +
                      json.dumps({"id": 2, "subscribe": {"channel": channel}}))
        seen = 0
        while seen < count:
            for line in (await asyncio.wait_for(ws.recv(), 15)).split("\n"):
                if not line.strip():
                    continue
                msg = json.loads(line)
                if "error" in msg:
                    sys.exit(f"error reply: {line}")
                pubs = msg.get("subscribe", {}).get("publications", [])
                if "push" in msg and "pub" in msg["push"]:
                    pubs = [msg["push"]["pub"]]
                for p in pubs:
                    print(json.dumps({"data": p["data"], "offset": p.get("offset", 0)}), flush=True)
                    seen += 1


asyncio.run(main())
