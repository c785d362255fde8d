"""The status LED and the event button, through gpiozero.

LED patterns (one LED, readable from across a plant room):

  online    steady on            connected to the broker, records flowing
  offline   slow blink 1 s/1 s   no broker connection: measuring and buffering in the outbox
  error     fast blink 0.1/0.1 s something failed in the last ERROR_HOLD_S seconds (outbox
                                 write, an I2C transfer or FIFO read, a main-loop pass)

The button (to ground, internal pull-up) marks an event on site -- "the pump
started rattling now": each press is queued here and the agent stores it as a
`button_press` reading (value: presses since the agent started), and, if
configured, captures a waveform block.

Pins come from gpiozero's pin factory: the GPIOZERO_PIN_FACTORY environment
variable picks the library on a real board (lgpio, rpigpio, pigpio, native);
with simulated hardware (`--hardware sim`) the agent passes gpiozero's
MockFactory, so the demo runs on a laptop and tests drive the button and read
the LED pin's history.
"""

import logging
import queue
import time

log = logging.getLogger("edge_agent.indicator")

# state -> (on_s, off_s) of the blink, None for steady on
PATTERNS = {
    "online": None,
    "offline": (1.0, 1.0),
    "error": (0.1, 0.1),
}
ERROR_HOLD_S = 10.0        # an error shows this long after the last one
BOUNCE_S = 0.05            # button debounce


class Indicator:
    """One status LED and one event button; either may be absent (pin None or "")."""

    def __init__(self, led_pin, button_pin, pin_factory=None):
        """Open the pins now (raises gpiozero's errors when the pins are unusable)."""
        from gpiozero import LED, Button
        self.led = None
        self.button = None
        self.state = None
        self._presses = queue.SimpleQueue()
        self._errors_seen = 0      # the error count follow() saw last
        self._error_until = 0.0    # monotonic time the error pattern ends
        try:
            if led_pin not in (None, ""):
                self.led = LED(led_pin, pin_factory=pin_factory)
            if button_pin not in (None, ""):
                self.button = Button(button_pin, pull_up=True, bounce_time=BOUNCE_S, pin_factory=pin_factory)
                self.button.when_pressed = self._pressed
        except Exception:
            self.close()
            raise

    def show(self, state):
        """Show a state (one of PATTERNS) on the LED; does nothing if it is shown already."""
        if state not in PATTERNS:
            raise ValueError("unknown indicator state %r; one of %s" % (state, ", ".join(PATTERNS)))
        if state == self.state:
            return
        if self.led is not None:
            pattern = PATTERNS[state]
            if pattern is None:
                self.led.on()   # stops a running blink first (joins gpiozero's blink thread)
            else:
                self.led.blink(on_time=pattern[0], off_time=pattern[1], background=True)
        # Only now: `state` tells what the LED shows, also to another thread reading it.
        self.state = state

    def follow(self, errors, connected):
        """Show error for ERROR_HOLD_S after the error count last changed, else online or offline (connected?)."""
        now = time.monotonic()
        if errors != self._errors_seen:
            self._errors_seen, self._error_until = errors, now + ERROR_HOLD_S
        self.show("error" if now < self._error_until else "online" if connected else "offline")

    def _pressed(self):
        # Called in gpiozero's thread: only queue the moment.
        self._presses.put(time.monotonic())

    def presses(self):
        """Monotonic times of the button presses since the last call, oldest first."""
        out = []
        while True:
            try:
                out.append(self._presses.get_nowait())
            except queue.Empty:
                return out

    def close(self):
        """Turn the LED off and release the pins."""
        if self.led is not None:
            try:
                self.led.off()       # stops a blink; the pin would otherwise keep its last level
            except Exception as e:
                log.debug("turning the LED off: %s", e)
        for dev in (self.button, self.led):
            if dev is not None:
                try:
                    dev.close()
                except Exception as e:  # closing must not raise on the way out
                    log.debug("closing %s: %s", dev, e)


def from_config(conf):
    """The Indicator for the [indicator] section, or None (disabled, or no usable GPIO: logged)."""
    ic = conf["indicator"]
    if not ic["enabled"] or (ic["led_pin"] == "" and ic["button_pin"] == ""):
        return None
    try:
        import gpiozero  # noqa: F401
    except ImportError as e:
        log.warning("no status LED or button: gpiozero is missing (%s); pip install 'fieldwatch[agent]'", e)
        return None
    factory = None
    if conf["sensor"]["hardware"] == "sim":
        from gpiozero.pins.mock import MockFactory
        factory = MockFactory()
    try:
        return Indicator(ic["led_pin"], ic["button_pin"], factory)
    except Exception as e:  # gpiozero's BadPinFactory (an ImportError), PinInvalidPin, permissions...
        log.warning("no status LED or button: GPIO %s / %s unusable: %s: %s (set GPIOZERO_PIN_FACTORY, "
                    "indicator.led_pin / indicator.button_pin, or indicator.enabled = false)",
                    ic["led_pin"], ic["button_pin"], type(e).__name__, e)
    return None
