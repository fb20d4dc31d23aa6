"""What every layer may use: errors, the one atomic writer, content hashes, the device, the hub."""
