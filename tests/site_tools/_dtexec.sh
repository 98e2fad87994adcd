#!/bin/sh
# Job script of the non-blocking dt* emulation: run the arguments as a command.
exec "$@"
