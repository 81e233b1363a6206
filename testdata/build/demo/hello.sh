#!/bin/sh
# Greets its argument, then shows what the build put into the image.
echo "Hello, $1! (running as $(id -un) in $(pwd))"
cat shout.txt
echo "numbers: $(tr '\n' ' ' < numbers.txt)"
