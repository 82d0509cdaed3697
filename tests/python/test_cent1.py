"""The cent client of the Centrifugo 1.x era (PyPI cent 2.1.0) against Gyre's signed v1 API.

Usage: test_cent1.py URL SECRET USER CHANNEL. USER is connected and subscribed to CHANNEL
when this starts; it is unsubscribed and then disconnected at the end.
"""
import sys

from cent import Client, CentException, RequestException

url, secret, user, channel = sys.argv[1:5]
c = Client(url, secret, timeout=5)


def check(cond, what):
    if not cond:
        print("FAILED:", what)
        sys.exit(1)
    print("ok:", what)


check(c.publish(channel, {"n": 1}) is None, "publish")
check(c.broadcast([channel, "other"], {"n": 2}) is None, "broadcast")

history = c.history(channel)
check([m["data"] for m in history] == [{"n": 2}, {"n": 1}], "history, newest first: %r" % history)
check(all(m["channel"] == channel and m["uid"] for m in history), "history messages: %r" % history)

presence = c.presence(channel)
check([p["user"] for p in presence.values()] == [user], "presence: %r" % presence)
check(all(cid == p["client"] for cid, p in presence.items()), "presence keyed by client")

channels = c.channels()
check(channel in channels, "channels: %r" % channels)

stats = c.stats()
check(len(stats["nodes"]) == 1, "stats: one node: %r" % stats)
check(stats["nodes"][0]["metrics"]["node_num_clients"] == 1, "stats: one client")

# The low-level batch: replies in order, an error in its own reply.
c.add("publish", {"channel": channel, "data": {"n": 3}})
c.add("publish", {"channel": "nope:x", "data": {}})
c.add("history", {"channel": channel})
replies = c.send()
check([r["method"] for r in replies] == ["publish", "publish", "history"], "batch methods: %r" % replies)
check(replies[0]["error"] is None and replies[0]["body"] is None, "batch publish: %r" % replies[0])
check(replies[1]["error"] == "namespace not found", "batch error: %r" % replies[1])
check(len(replies[2]["body"]["data"]) == 3, "batch history: %r" % replies[2])

c.unsubscribe(user, channel)
check(c.presence(channel) == {}, "unsubscribe")
c.disconnect(user)
check(c.stats()["nodes"][0]["metrics"]["node_num_clients"] == 0, "disconnect")

try:
    Client(url, secret + "x", timeout=5).publish(channel, {})
    check(False, "a wrong secret is refused")
except RequestException as e:
    check("401" in str(e), "a wrong secret is refused: %s" % e)
except CentException as e:
    check(False, "a wrong secret: %r" % e)

print("cent 2.1.0: checks passed")
