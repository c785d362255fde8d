"""A fake I2C bus holding simulated chips, for Blinka-style drivers and MicroPython code.

``FakeI2C`` speaks two dialects on one object:

- Blinka / CircuitPython ``busio.I2C``: ``try_lock``, ``unlock``, ``scan``, ``writeto``,
  ``readfrom_into`` and ``writeto_then_readfrom`` with ``start``/``end`` slicing, which is
  what ``adafruit_bus_device.i2c_device.I2CDevice`` (and so the Adafruit ADXL34x driver) calls.
- MicroPython ``machine.I2C`` memory access: ``readfrom_mem_into``, ``readfrom_mem``,
  ``writeto_mem`` (and ``writeto``/``readfrom_into`` with a positional ``stop``).

A device attached at an address needs ``read_register(reg, n) -> bytes`` and
``write_register(reg, data)``; if it also has ``read_into(reg, buf)`` that is used to fill
the caller's buffer without allocating. The bus keeps a register pointer per device:
a 1-byte write sets it, a longer write sets it and writes the rest at auto-incremented
registers, and a read starts at the pointer and leaves it after the last byte read.

Counters (for benchmarks): ``transactions``, ``bytes_written``, ``bytes_read`` and ``bits``
(the clock cycles the traffic would take on a real bus: start, 9 per byte including ACK,
stop), so ``bus_seconds(400000)`` estimates the time spent on a 400 kHz bus.

Errors: ``fail_next(count, after, errno)`` makes chosen transactions fail and ``error_rate``
fails a deterministic pseudo-random fraction of them, raising ``OSError(errno)``; the default
errno 121 (EREMOTEIO) is what Linux i2c-dev reports for a NACK. An injected error aborts the
transaction before the device sees it (an address NACK): the chip's state does not change.

Common subset of CPython and MicroPython.
"""

EREMOTEIO = 121  # Linux: "Remote I/O error", a NACK from the device
EIO = 5  # generic I/O error
_MESSAGES = {EREMOTEIO: "Remote I/O error", EIO: "Input/output error", 19: "No such device",
             110: "Connection timed out"}


def _bus_error(errno):
    """OSError with .errno set on both CPython (needs two args) and MicroPython."""
    return OSError(errno, _MESSAGES.get(errno, "I2C error"))


class FakeI2C:
    """I2C bus with simulated devices, transaction counters and error injection."""

    def __init__(self, error_rate=0.0, errno=EREMOTEIO, seed=12345):
        """Create an empty bus; error_rate (0..1) fails that fraction of transactions."""
        self.error_rate = error_rate
        self.errno = errno
        self._devices = {}
        self._pointers = {}
        self._locked = False
        self._lcg = (seed & 0x7FFFFFFF) or 1
        self._fail_after = 0  # successful transactions still to pass before failing
        self._fail_count = 0  # transactions to fail once _fail_after reaches 0
        self._fail_errno = errno
        self.transactions = 0  # bus transactions attempted (a write-then-read counts once)
        self.bytes_written = 0  # data bytes written, register pointer bytes included
        self.bytes_read = 0  # data bytes read
        self.bits = 0  # SCL cycles the traffic takes (start/stop 1, each byte + ACK 9)
        self.errors_injected = 0  # OSErrors raised on purpose

    # ------------------------------------------------------------- devices
    def attach(self, address, device):
        """Put a device (register model) on the bus at a 7-bit address."""
        self._devices[address] = device
        self._pointers[address] = 0

    def detach(self, address):
        """Remove the device at address (it then NACKs like an unplugged chip)."""
        self._devices.pop(address, None)
        self._pointers.pop(address, None)

    def device_at(self, address):
        """The device attached at address, or None."""
        return self._devices.get(address)

    # --------------------------------------------------- locking (busio.I2C)
    def try_lock(self):
        """Take the bus lock; False if it is already held."""
        if self._locked:
            return False
        self._locked = True
        return True

    def unlock(self):
        """Release the bus lock."""
        self._locked = False

    def deinit(self):
        """Release the bus (nothing to free)."""
        self._locked = False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        self.deinit()
        return False

    def scan(self):
        """Addresses of the attached devices, ascending."""
        return sorted(self._devices)

    # ------------------------------------------------------ error injection
    def fail_next(self, count=1, after=0, errno=None):
        """Make `count` transactions fail, starting after `after` successful ones."""
        self._fail_after = after
        self._fail_count = count
        self._fail_errno = self.errno if errno is None else errno

    def _random(self):
        """Next value of a small LCG in [0, 1) (same sequence on CPython and MicroPython)."""
        self._lcg = (self._lcg * 1103515245 + 12345) & 0x7FFFFFFF
        return self._lcg / 2147483648.0

    def _begin(self, address, segments_bytes, segments):
        """Count one transaction and raise the injected or NACK error, if any.

        segments_bytes counts every byte on the wire, address bytes included.
        """
        self.transactions += 1
        # start + (address byte + data bytes) per segment, repeated starts, stop
        self.bits += segments + 9 * segments_bytes + 1
        if self._fail_count > 0:
            if self._fail_after > 0:
                self._fail_after -= 1
            else:
                self._fail_count -= 1
                self.errors_injected += 1
                raise _bus_error(self._fail_errno)
        if self.error_rate > 0 and self._random() < self.error_rate:
            self.errors_injected += 1
            raise _bus_error(self.errno)
        device = self._devices.get(address)
        if device is None:
            raise _bus_error(self.errno)  # nobody ACKs the address
        return device

    def _write(self, address, device, buffer, start, end):
        """Deliver a write to the device: first byte is the register pointer."""
        n = end - start
        self.bytes_written += n
        if n == 0:
            return  # address-only probe
        reg = buffer[start]
        self._pointers[address] = reg
        if n > 1:
            device.write_register(reg, bytes(buffer[start + 1:end]))
            self._pointers[address] = (reg + n - 1) & 0xFF

    def _read(self, address, device, buffer, start, end):
        """Fill buffer[start:end] from the device at its register pointer."""
        n = end - start
        self.bytes_read += n
        if n == 0:
            return
        reg = self._pointers[address]
        reader = getattr(device, "read_into", None)
        if reader is not None:
            reader(reg, memoryview(buffer)[start:end])
        else:
            data = device.read_register(reg, n)
            for i in range(n):
                buffer[start + i] = data[i]
        self._pointers[address] = (reg + n) & 0xFF

    # ------------------------------------------------ busio.I2C / machine.I2C
    def writeto(self, address, buffer, stop=True, *, start=0, end=None):
        """Write buffer[start:end] to the device at address; returns the bytes written."""
        if end is None:
            end = len(buffer)
        device = self._begin(address, end - start + 1, 1)
        self._write(address, device, buffer, start, end)
        return end - start

    def readfrom_into(self, address, buffer, stop=True, *, start=0, end=None):
        """Read into buffer[start:end] from the device's current register pointer."""
        if end is None:
            end = len(buffer)
        device = self._begin(address, end - start + 1, 1)
        self._read(address, device, buffer, start, end)

    def readfrom(self, address, nbytes, stop=True):
        """Read nbytes from the current register pointer (machine.I2C); returns bytes."""
        buffer = bytearray(nbytes)
        self.readfrom_into(address, buffer)
        return bytes(buffer)

    def writeto_then_readfrom(self, address, buffer_out, buffer_in, *, out_start=0,
                              out_end=None, in_start=0, in_end=None, stop=False):
        """Write then read with a repeated start, as one transaction (busio.I2C)."""
        if out_end is None:
            out_end = len(buffer_out)
        if in_end is None:
            in_end = len(buffer_in)
        device = self._begin(address, (out_end - out_start + 1) + (in_end - in_start + 1), 2)
        self._write(address, device, buffer_out, out_start, out_end)
        self._read(address, device, buffer_in, in_start, in_end)

    # ----------------------------------------------- machine.I2C memory access
    def readfrom_mem_into(self, address, memaddr, buffer, *, addrsize=8):
        """Read len(buffer) bytes from register memaddr into buffer (machine.I2C)."""
        n = len(buffer)
        device = self._begin(address, 2 + n + 1, 2)
        self.bytes_written += 1
        self.bytes_read += n
        self._pointers[address] = memaddr & 0xFF
        reader = getattr(device, "read_into", None)
        if reader is not None:
            reader(memaddr, buffer)
        else:
            data = device.read_register(memaddr, n)
            for i in range(n):
                buffer[i] = data[i]
        self._pointers[address] = (memaddr + n) & 0xFF

    def readfrom_mem(self, address, memaddr, nbytes, *, addrsize=8):
        """Read nbytes from register memaddr (machine.I2C); returns bytes."""
        buffer = bytearray(nbytes)
        self.readfrom_mem_into(address, memaddr, buffer)
        return bytes(buffer)

    def writeto_mem(self, address, memaddr, buffer, *, addrsize=8):
        """Write buffer to registers starting at memaddr (machine.I2C)."""
        n = len(buffer)
        device = self._begin(address, 2 + n, 1)
        self.bytes_written += 1 + n
        if n:
            device.write_register(memaddr, bytes(buffer))
        self._pointers[address] = (memaddr + n) & 0xFF

    # ---------------------------------------------------------- benchmarks
    def bus_seconds(self, frequency=400000):
        """Time the counted traffic would occupy a bus clocked at frequency Hz."""
        return self.bits / frequency

    def reset_counters(self):
        """Zero the transaction, byte, bit and error counters."""
        self.transactions = 0
        self.bytes_written = 0
        self.bytes_read = 0
        self.bits = 0
        self.errors_injected = 0
