"""sys.monitoring for the tests that compare a native object's events with
its twin's: a tool with callbacks for the with-block only."""

import contextlib
import functools
import operator
import sys

TOOL = 4


@contextlib.contextmanager
def monitoring(name, callbacks, tool=TOOL):
    """Use tool id `tool` as `name`, register `callbacks` ({event: callable})
    and turn their events on for the with-block; afterwards turn them off,
    unregister the callbacks and free the tool, whatever happened."""
    mon = sys.monitoring
    mon.use_tool_id(tool, name)
    try:
        for event, callback in callbacks.items():
            mon.register_callback(tool, event, callback)
        mon.set_events(tool, functools.reduce(operator.or_, callbacks, 0))
        yield
    finally:
        mon.set_events(tool, 0)
        for event in callbacks:
            mon.register_callback(tool, event, None)
        mon.free_tool_id(tool)
