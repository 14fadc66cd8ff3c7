"""The MuJoCo mirror of the cell (arm, gripper, table, objects, calibrated camera),
its gymnasium environments and scripted experts, and the MetaWorld adapter for the
paper's tasks. `sim.registry` is the one entry point that knows every task id."""
