//! vxmesh: the node.
