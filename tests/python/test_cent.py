#!/usr/bin/env python3
"""Drives a running gyre server with the official `cent` client (pinned in .ci/run).

Usage: test_cent.py API_URL API_KEY    (API_URL like http://127.0.0.1:8000/api)

The server must use the test config of tests/it/util.rs: namespace `hist` (history 100,
presence), namespace `nohist` (nothing), default namespace with history 10 and presence.
Exits 0 when every check passes, 1 on the first failure.
"""

import importlib.metadata
import sys
import traceback

from cent import (
    BatchRequest,
    BroadcastRequest,
    ChannelsRequest,
    Client,
    HistoryRemoveRequest,
    HistoryRequest,
    InfoRequest,
    PresenceRequest,
    PresenceStatsRequest,
    PublishRequest,
    StreamPosition,
)
from cent.exceptions import CentApiResponseError, CentUnauthorizedError

CHECKS = 0


def check(cond, what):
    global CHECKS
    CHECKS += 1
    if not cond:
        raise AssertionError(what)


def expect_api_error(code, fn, *args):
    try:
        fn(*args)
    except CentApiResponseError as e:
        check(e.code == code, f"expected API error {code}, got {e.code} {e.message!r}")
        return
    raise AssertionError(f"expected API error {code}, call succeeded")


def run(api_url, api_key):
    client = Client(api_url, api_key, timeout=10)

    # publish: history channel gets offset/epoch, others an empty result.
    r1 = client.publish(PublishRequest(channel="hist:py", data={"text": "one"}))
    check(r1.offset == 1 and r1.epoch, f"publish result {r1!r}")
    r2 = client.publish(PublishRequest(channel="hist:py", data={"text": "two"}, tags={"k": "v"}))
    check(r2.offset == 2 and r2.epoch == r1.epoch, f"second publish {r2!r}")
    r = client.publish(PublishRequest(channel="nohist:py", data=[1, 2, 3]))
    check(r.offset == 0 and r.epoch == "", f"publish without history {r!r}")
    expect_api_error(102, client.publish, PublishRequest(channel="nope:py", data=1))

    # idempotency key: same result, one publication.
    i1 = client.publish(PublishRequest(channel="hist:idem", data=1, idempotency_key="key-1"))
    i2 = client.publish(PublishRequest(channel="hist:idem", data=1, idempotency_key="key-1"))
    check(i1.offset == i2.offset == 1 and i1.epoch == i2.epoch, f"idempotent publishes {i1!r} {i2!r}")

    # broadcast: one response per channel, in order.
    b = client.broadcast(BroadcastRequest(channels=["hist:b1", "nohist:b2", "nope:b3", "hist:b1"], data={"b": True}))
    check(len(b.responses) == 4, f"broadcast responses {b!r}")
    check(b.responses[0].error is None and b.responses[0].result.epoch, f"broadcast[0] {b.responses[0]!r}")
    check(b.responses[1].error is None and b.responses[1].result.offset == 0, f"broadcast[1] {b.responses[1]!r}")
    check(b.responses[2].error is not None and b.responses[2].error.code == 102, f"broadcast[2] {b.responses[2]!r}")
    check(sorted([b.responses[0].result.offset, b.responses[3].result.offset]) == [1, 2], f"broadcast offsets {b!r}")
    expect_api_error(107, client.broadcast, BroadcastRequest(channels=[], data=1))

    # history.
    h = client.history(HistoryRequest(channel="hist:py", limit=-1))
    check(h.offset == 2 and h.epoch == r1.epoch, f"history position {h!r}")
    check([p.offset for p in h.publications] == [1, 2], f"history offsets {h!r}")
    check(h.publications[0].data == {"text": "one"}, f"history data {h.publications[0]!r}")
    check(h.publications[0].tags is None, f"history tags of untagged publication {h.publications[0]!r}")
    check(h.publications[1].tags == {"k": "v"}, f"history tags {h.publications[1]!r}")
    h = client.history(HistoryRequest(channel="hist:py", limit=0))
    check(h.publications == [] and h.offset == 2, f"history limit 0 {h!r}")
    h = client.history(HistoryRequest(channel="hist:py", limit=10, reverse=True))
    check([p.offset for p in h.publications] == [2, 1], f"history reverse {h!r}")
    h = client.history(HistoryRequest(channel="hist:py", limit=10, since=StreamPosition(offset=1, epoch=r1.epoch)))
    check([p.offset for p in h.publications] == [2], f"history since {h!r}")
    expect_api_error(112, client.history, HistoryRequest(channel="hist:py", limit=10, since=StreamPosition(offset=1, epoch="wrong")))
    expect_api_error(108, client.history, HistoryRequest(channel="nohist:py", limit=10))
    h = client.history(HistoryRequest(channel="hist:idem", limit=-1))
    check(len(h.publications) == 1, f"idempotency left one publication {h!r}")

    # history_remove keeps the position.
    client.history_remove(HistoryRemoveRequest(channel="hist:py"))
    h = client.history(HistoryRequest(channel="hist:py", limit=-1))
    check(h.publications == [] and h.offset == 2 and h.epoch == r1.epoch, f"history after remove {h!r}")
    expect_api_error(108, client.history_remove, HistoryRemoveRequest(channel="nohist:py"))

    # presence.
    p = client.presence(PresenceRequest(channel="hist:py"))
    check(p.presence == {}, f"presence {p!r}")
    ps = client.presence_stats(PresenceStatsRequest(channel="hist:py"))
    check(ps.num_clients == 0 and ps.num_users == 0, f"presence_stats {ps!r}")
    expect_api_error(108, client.presence_stats, PresenceStatsRequest(channel="nohist:py"))

    # channels.
    c = client.channels(ChannelsRequest())
    check(c.channels == {}, f"channels {c!r}")
    c = client.channels(ChannelsRequest(pattern="hist:*"))
    check(c.channels == {}, f"channels with pattern {c!r}")

    # info.
    info = client.info(InfoRequest())
    check(len(info.nodes) == 1, f"info nodes {info!r}")
    node = info.nodes[0]
    check(len(node.uid) == 36 and node.name and node.version.endswith("OSS"), f"info node {node!r}")
    check(node.num_clients == 0 and node.num_users == 0 and node.num_channels == 0 and node.num_subs == 0, f"info counts {node!r}")

    # batch, sequential and parallel.
    for parallel in (False, True):
        ch = "hist:batch-par" if parallel else "hist:batch-seq"
        res = client.batch(
            BatchRequest(
                requests=[
                    PublishRequest(channel=ch, data={"i": 1}),
                    PublishRequest(channel="nohist:batch", data={"i": 2}),
                    HistoryRequest(channel=ch, limit=-1) if not parallel else PresenceStatsRequest(channel=ch),
                    InfoRequest(),
                ],
                parallel=parallel,
            )
        )
        check(len(res.replies) == 4, f"batch replies {res!r}")
        check(res.replies[0].offset == 1 and res.replies[0].epoch, f"batch publish {res.replies[0]!r}")
        check(res.replies[1].offset == 0, f"batch publish without history {res.replies[1]!r}")
        if parallel:
            check(res.replies[2].num_clients == 0, f"batch presence_stats {res.replies[2]!r}")
        else:
            check([p.offset for p in res.replies[2].publications] == [1], f"batch history {res.replies[2]!r}")
        check(len(res.replies[3].nodes) == 1, f"batch info {res.replies[3]!r}")

    # A wrong key is refused.
    bad = Client(api_url, "wrong-key", timeout=10)
    try:
        bad.publish(PublishRequest(channel="hist:py", data=1))
        raise AssertionError("publish with a wrong key succeeded")
    except CentUnauthorizedError:
        pass
    h = client.history(HistoryRequest(channel="hist:py", limit=-1))
    check(h.offset == 2, f"unauthorized publish ran: {h!r}")

    client.close()
    bad.close()


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        run(sys.argv[1], sys.argv[2])
    except Exception:
        traceback.print_exc()
        print(f"FAILED after {CHECKS} checks", file=sys.stderr)
        return 1
    print(f"cent {importlib.metadata.version('cent')}: all {CHECKS} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
