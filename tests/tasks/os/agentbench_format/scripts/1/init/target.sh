#!/bin/bash
# Run by AgentBench as `bash -c "<this text>"` in its own docker exec: the export and the cd
# below end with that process, so neither the agent's shell nor the check scripts see them.
export TARGET_DIR=/root/target
mkdir -p "$TARGET_DIR/a" "$TARGET_DIR/b"
cd "$TARGET_DIR"
