//! The Spot Fleet capacity controller (in progress): keeps an ECS cluster's reservation near a target
//! by moving the fleet's target capacity. So far: the decision policy ([`policy`]), a pure function
//! of an observation, the fleet's state and the last actions. Observing ECS and acting on the fleet
//! come next.

pub mod policy;
