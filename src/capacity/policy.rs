//! The capacity decision: a pure function of what was observed, the fleet's state and the last
//! actions. No I/O, no clock: the caller passes `now`. Every decision carries its reason.
//!
//! Units: CPU in ECS CPU units (1024 per vCPU), memory in MiB, capacity in the fleet's capacity
//! units (an instance type's `WeightedCapacity`, 1 when unweighted).

use std::time::Duration;

/// CPU units and MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    pub cpu: u32,
    pub mem: u32,
}

impl Resources {
    pub fn new(cpu: u32, mem: u32) -> Self {
        Resources { cpu, mem }
    }

    pub fn fits_in(self, free: Resources) -> bool {
        self.cpu <= free.cpu && self.mem <= free.mem
    }

    fn minus(self, o: Resources) -> Resources {
        Resources { cpu: self.cpu.saturating_sub(o.cpu), mem: self.mem.saturating_sub(o.mem) }
    }

    pub fn plus(self, o: Resources) -> Resources {
        Resources { cpu: self.cpu + o.cpu, mem: self.mem + o.mem }
    }
}

/// A container instance as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// The EC2 instance id.
    pub id: String,
    pub instance_type: String,
    pub registered: Resources,
    pub remaining: Resources,
    /// The resources of each task running (or starting) on it, DAEMON services' tasks aside: those
    /// belong to the instance (in `daemon`), are not moved when it goes and do not keep it busy.
    pub tasks: Vec<Resources>,
    /// DRAINING instances take no new tasks and are on their way out.
    pub draining: bool,
    /// Runs tasks a drain does not move (started by RunTask, not by a service): never a victim.
    pub pinned: bool,
    /// Launched by the fleet (or group) the controller moves: only these can be victims.
    pub in_fleet: bool,
    /// Reserved by the tasks of DAEMON services (one per instance): they come and go with the
    /// instances, so the look-ahead does not count them as demand.
    pub daemon: Resources,
}

/// One instance type the fleet may launch.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceType {
    pub name: String,
    pub resources: Resources,
    /// Capacity units one instance of this type provides.
    pub weight: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub instances: Vec<Instance>,
    /// Tasks that could not be placed (PROVISIONING/PENDING without an instance, services short of
    /// their desired count), each with its CPU and memory.
    pub unplaced: Vec<Resources>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    /// The fleet's target capacity, in units.
    pub target: f64,
    /// Capacity fulfilled so far; `target - fulfilled` is still launching.
    pub fulfilled: f64,
    pub types: Vec<InstanceType>,
}

/// What the controller remembers between decisions.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Memory {
    /// Seconds on the caller's clock.
    pub last_scale_out: Option<f64>,
    pub last_scale_in: Option<f64>,
    /// Since when the reservation has been below target without a break.
    pub below_target_since: Option<f64>,
    /// The demand of the last few decisions, for the look-ahead.
    pub trend: Trend,
}

/// The cluster's demand (resources of the tasks running on ACTIVE instances and of the unplaced
/// tasks an instance type can hold, DAEMON services' tasks left out) at the last `TREND_SAMPLES`
/// decisions.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Trend {
    /// (seconds on the caller's clock, demand), oldest first.
    samples: [Option<(f64, Resources)>; TREND_SAMPLES],
}

/// Decisions remembered for the look-ahead (three intervals).
pub const TREND_SAMPLES: usize = 4;

impl Trend {
    /// Record the demand seen at `now` (a sample not later than the last one is ignored).
    pub fn push(&mut self, now: f64, demand: Resources) {
        if self.samples[TREND_SAMPLES - 1].is_some_and(|(t, _)| now <= t) {
            return;
        }
        self.samples.rotate_left(1);
        self.samples[TREND_SAMPLES - 1] = Some((now, demand));
    }

    /// The sustained growth, per second (CPU units, MiB). Per resource, demand counts as rising
    /// when it fell in none of the recorded intervals and rose in at least two; the rate is the
    /// mean over the intervals from the first rise on, other than the one with the largest rise.
    /// So a one-off jump (a deploy, a spike) projects nothing, and a jump inside a ramp does not
    /// inflate it; a ramp in steps ("rise, flat, rise") still counts, and a ramp that began inside
    /// the window is not diluted by the quiet intervals before it. None until three samples are there.
    pub fn rate(&self) -> Option<(f64, f64)> {
        let s: Vec<(f64, Resources)> = self.samples.iter().flatten().copied().collect();
        if s.len() < 3 {
            return None;
        }
        let per = |get: fn(Resources) -> u32| -> f64 {
            let steps: Vec<(f64, f64)> =
                s.windows(2).map(|w| (w[1].0 - w[0].0, f64::from(get(w[1].1)) - f64::from(get(w[0].1)))).collect();
            if steps.iter().any(|(_, d)| *d < 0.0) || steps.iter().filter(|(_, d)| *d > 0.0).count() < 2 {
                return 0.0;
            }
            // A ramp that began inside the window is measured from its first rise, not diluted by the
            // quiet intervals before it.
            let first = steps.iter().position(|(_, d)| *d > 0.0).unwrap_or(0);
            let steps = &steps[first..];
            let largest = steps.iter().enumerate().max_by(|a, b| a.1 .1.total_cmp(&b.1 .1)).map(|(i, _)| i);
            let (dt, dd) = steps
                .iter()
                .enumerate()
                .filter(|(i, _)| Some(*i) != largest)
                .fold((0.0, 0.0), |a, (_, (t, d))| (a.0 + t, a.1 + d));
            if dt > 0.0 {
                dd / dt
            } else {
                0.0
            }
        };
        Some((per(|r| r.cpu), per(|r| r.mem)))
    }
}

/// What the look-ahead counts as demand: tasks on ACTIVE instances (DAEMON services' aside) plus the
/// unplaced tasks some instance type can hold.
pub fn demand(obs: &Observation, types: &[InstanceType]) -> Resources {
    let used = obs
        .instances
        .iter()
        .filter(|i| !i.draining)
        .fold(Resources::default(), |a, i| a.plus(i.registered.minus(i.remaining).minus(i.daemon)));
    obs.unplaced.iter().filter(|t| types.iter().any(|ty| t.fits_in(ty.resources))).fold(used, |a, t| a.plus(*t))
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Percent, 1..=100.
    pub target_reservation: f64,
    pub min_capacity: f64,
    pub max_capacity: f64,
    pub max_scale_out_step: f64,
    pub max_scale_in_step: f64,
    pub scale_out_cooldown: Duration,
    pub scale_in_cooldown: Duration,
    /// How long new capacity takes to run tasks: demand that keeps rising is projected this far
    /// ahead when scaling out. Zero turns the look-ahead off.
    pub lead_time: Duration,
    /// Victims are drained (their service tasks move) before they go; without draining only
    /// instances that run no task at all may be chosen.
    pub drain_before_scale_in: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Hold,
    /// Raise the target capacity to `to`.
    ScaleOut {
        to: f64,
    },
    /// Drain and terminate exactly `victims`, then lower the target to `to`.
    ScaleIn {
        to: f64,
        victims: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub action: Action,
    /// What was observed, what rule fired, what limit bound it.
    pub reason: String,
    /// The reservation observed, percent (max of CPU and memory), for status and metrics.
    pub reservation: f64,
}

/// Whether this observation counts towards the scale-in cooldown: reservation below target and no
/// task waiting that some instance type could hold (a task no type can hold buys nothing, so it does
/// not hold capacity either).
pub fn below_target(obs: &Observation, types: &[InstanceType], target: f64) -> bool {
    reservation(&obs.instances) < target && !obs.unplaced.iter().any(|t| types.iter().any(|ty| t.fits_in(ty.resources)))
}

/// Reservation in percent: the larger of CPU and memory, over ACTIVE instances.
pub fn reservation(instances: &[Instance]) -> f64 {
    reservation_with(instances, Resources::default())
}

/// CPU and memory reservation apart, percent, over ACTIVE instances (what `capacity status` shows).
pub fn reservations(instances: &[Instance]) -> (f64, f64) {
    reservations_with(instances, Resources::default())
}

/// The reservation if `extra` were reserved too.
fn reservation_with(instances: &[Instance], extra: Resources) -> f64 {
    let (cpu, mem) = reservations_with(instances, extra);
    cpu.max(mem)
}

fn reservations_with(instances: &[Instance], extra: Resources) -> (f64, f64) {
    let (mut reg, mut used) = (Resources::default(), extra);
    for i in instances.iter().filter(|i| !i.draining) {
        reg = reg.plus(i.registered);
        used = used.plus(i.registered.minus(i.remaining));
    }
    let pct = |u: u32, r: u32| if r == 0 { 0.0 } else { 100.0 * f64::from(u) / f64::from(r) };
    (pct(used.cpu, reg.cpu), pct(used.mem, reg.mem))
}

/// The result of bin-packing unplaced tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct Packing {
    /// Tasks that fit in free space that exists now.
    pub fit_existing: usize,
    /// Capacity units needed for the rest, whichever of the fleet's types it launches.
    pub units: f64,
    /// For the reason: instances needed per type.
    pub per_type: Vec<(String, usize)>,
    /// Tasks no type can hold.
    pub too_large: usize,
}

/// First-fit decreasing: the tasks (largest first) into the free space of ACTIVE instances, then
/// into new instances. The fleet chooses which types to launch, so the units needed are the worst
/// case over the types that can hold every remaining task: enough whichever it picks.
pub fn pack(unplaced: &[Resources], instances: &[Instance], types: &[InstanceType]) -> Packing {
    let mut tasks: Vec<Resources> = unplaced.to_vec();
    tasks.sort_by_key(|t| std::cmp::Reverse((t.cpu.max(t.mem), t.cpu, t.mem)));
    let mut free: Vec<Resources> = instances.iter().filter(|i| !i.draining).map(|i| i.remaining).collect();
    let mut rest = Vec::new();
    let mut fit_existing = 0;
    for t in tasks {
        match free.iter_mut().find(|f| t.fits_in(**f)) {
            Some(f) => {
                *f = f.minus(t);
                fit_existing += 1;
            }
            None => rest.push(t),
        }
    }
    let too_large = rest.iter().filter(|t| !types.iter().any(|ty| t.fits_in(ty.resources))).count();
    rest.retain(|t| types.iter().any(|ty| t.fits_in(ty.resources)));
    let mut units: f64 = 0.0;
    let mut per_type = Vec::new();
    for ty in types {
        // A type that cannot hold some task cannot be the one that makes room for it.
        if rest.iter().any(|t| !t.fits_in(ty.resources)) {
            continue;
        }
        let mut bins: Vec<Resources> = Vec::new();
        for t in &rest {
            match bins.iter_mut().find(|b| t.fits_in(**b)) {
                Some(b) => *b = b.minus(*t),
                None => bins.push(ty.resources.minus(*t)),
            }
        }
        units = units.max(bins.len() as f64 * ty.weight);
        per_type.push((ty.name.clone(), bins.len()));
    }
    if per_type.is_empty() && !rest.is_empty() {
        // No single type holds every task: each task in the smallest type that holds it, summed.
        for t in &rest {
            if let Some(ty) =
                types.iter().filter(|ty| t.fits_in(ty.resources)).min_by(|a, b| a.weight.total_cmp(&b.weight))
            {
                units += ty.weight;
            }
        }
        per_type.push(("mixed".into(), rest.len()));
    }
    Packing { fit_existing, units, per_type, too_large }
}

/// Decide what to do now.
pub fn decide(obs: &Observation, fleet: &Fleet, mem: &Memory, limits: &Limits, now: f64) -> Decision {
    let res = reservation(&obs.instances);
    let launching = (fleet.target - fleet.fulfilled).max(0.0);
    let target = limits.target_reservation;
    let seen = format!(
        "reservation {res:.1}% (target {target}%), {} instances, {} unplaced tasks, capacity {} (fulfilled {})",
        obs.instances.iter().filter(|i| !i.draining).count(),
        obs.unplaced.len(),
        fleet.target,
        fleet.fulfilled
    );
    let hold = |why: String| Decision { action: Action::Hold, reason: format!("{seen}: {why}"), reservation: res };

    // Below min_capacity (set by hand, or by someone else): back to it first.
    if fleet.target < limits.min_capacity {
        let to = limits.min_capacity;
        return Decision {
            action: Action::ScaleOut { to },
            reason: format!("{seen}: scale out to {to}: capacity is below min_capacity {}", limits.min_capacity),
            reservation: res,
        };
    }
    // Tasks no instance type can hold are reported, but no capacity is bought or held for them.
    let helpable: Vec<Resources> =
        obs.unplaced.iter().copied().filter(|t| fleet.types.iter().any(|ty| t.fits_in(ty.resources))).collect();
    // Scale out: room for the unplaced tasks, then back to the target reservation.
    let packing = pack(&obs.unplaced, &obs.instances, &fleet.types);
    let for_tasks = packing.units;
    // Demand that rose in every recent interval is projected over the lead time: what it will be
    // by the time capacity raised now can take it.
    let lead = limits.lead_time.as_secs_f64();
    let ahead = match mem.trend.rate() {
        Some((cpu, mem_rate)) if lead > 0.0 && (cpu > 0.0 || mem_rate > 0.0) => {
            Resources::new((cpu * lead).ceil() as u32, (mem_rate * lead).ceil() as u32)
        }
        _ => Resources::default(),
    };
    let for_target = units_for_target(&obs.instances, &helpable, ahead, &fleet.types, target);
    // Both must hold: room for the tasks (discrete, bin-packed) and the reservation back at target
    // once they run. Capacity still launching counts as present.
    let needed = for_tasks.max(for_target) - launching;
    if needed > 0.0 {
        if let Some(t) = mem.last_scale_out {
            let wait = limits.scale_out_cooldown.as_secs_f64() - (now - t);
            if wait > 0.0 {
                return hold(format!("needs {needed:.1} more units but the scale-out cooldown has {wait:.0}s left"));
            }
        }
        let wanted = fleet.target + needed.ceil();
        let mut to = wanted.min(fleet.target + limits.max_scale_out_step).min(limits.max_capacity);
        to = to.max(limits.min_capacity);
        if to <= fleet.target {
            return hold(format!(
                "needs {needed:.1} more units but capacity is at max_capacity {}",
                limits.max_capacity
            ));
        }
        let bound = if to < wanted {
            if to >= limits.max_capacity {
                format!("; bound by max_capacity {}", limits.max_capacity)
            } else {
                format!("; bound by max_scale_out_step {}", limits.max_scale_out_step)
            }
        } else {
            String::new()
        };
        let tasks = if obs.unplaced.is_empty() {
            String::new()
        } else {
            format!(
                "{} unplaced tasks: {} fit in free space, the rest need {for_tasks:.1} units ({}){}; ",
                obs.unplaced.len(),
                packing.fit_existing,
                packing.per_type.iter().map(|(n, b)| format!("{b} × {n}")).collect::<Vec<_>>().join(" or "),
                if packing.too_large > 0 {
                    format!(", {} fit no instance type", packing.too_large)
                } else {
                    String::new()
                }
            )
        };
        let rising = if ahead == Resources::default() {
            String::new()
        } else {
            format!(
                " (demand rising: {} CPU units and {} MiB more expected within the {}s lead time)",
                ahead.cpu,
                ahead.mem,
                limits.lead_time.as_secs()
            )
        };
        let reason = format!(
            "{seen}: scale out to {to}: {tasks}{for_target:.1} units bring reservation to target once they run{rising}; {launching:.1} units already launching{bound}"
        );
        return Decision { action: Action::ScaleOut { to }, reason, reservation: res };
    }
    if !helpable.is_empty() {
        return hold(format!(
            "{} unplaced tasks fit in free space or in the {launching:.1} units already launching",
            helpable.len()
        ));
    }

    // Scale in: below target for the whole cooldown, nothing launching, never below min.
    if res >= target {
        return hold("at or above target: nothing to remove".into());
    }

    if launching > 0.0 {
        return hold(format!("{launching:.1} units still launching: no scale-in until they are in"));
    }
    let since = mem.below_target_since.unwrap_or(now);
    let below_for = now - since;
    if below_for < limits.scale_in_cooldown.as_secs_f64() {
        return hold(format!(
            "below target for {below_for:.0}s of the {}s scale-in cooldown",
            limits.scale_in_cooldown.as_secs()
        ));
    }
    if let Some(t) = mem.last_scale_in {
        if now - t < limits.scale_in_cooldown.as_secs_f64() {
            return hold("the last scale-in is within the scale-in cooldown".into());
        }
    }
    let (victims, passed) = choose_victims(&obs.instances, &fleet.types, limits, fleet.target, ahead);
    if victims.is_empty() {
        return hold(format!("below target, but no instance can go (passed over: {})", passed.explain(limits, ahead)));
    }
    let units: f64 = victims.iter().map(|v| weight_of(&fleet.types, &v.instance_type)).sum();
    let to = fleet.target - units;
    let bound = if passed == PassedOver::default() {
        String::new()
    } else {
        format!("; others passed over: {}", passed.explain(limits, ahead))
    };
    let reason = format!(
        "{seen}: scale in to {to}: below target for {below_for:.0}s; removing {} ({} tasks moved elsewhere){bound}",
        victims.iter().map(|v| v.id.as_str()).collect::<Vec<_>>().join(", "),
        victims.iter().map(|v| v.tasks.len()).sum::<usize>(),
    );
    Decision {
        action: Action::ScaleIn { to, victims: victims.iter().map(|v| v.id.clone()).collect() },
        reason,
        reservation: res,
    }
}

fn weight_of(types: &[InstanceType], name: &str) -> f64 {
    types.iter().find(|t| t.name == name).map(|t| t.weight).unwrap_or(1.0)
}

/// Units that bring the reservation, once the unplaced tasks run too (and the demand `ahead`
/// arrives), down to the target: per resource, what must be registered beyond today, in the fleet
/// type with the fewest resources per unit (the worst case: enough whichever type the fleet launches).
fn units_for_target(
    instances: &[Instance],
    unplaced: &[Resources],
    ahead: Resources,
    types: &[InstanceType],
    target: f64,
) -> f64 {
    let active: Vec<&Instance> = instances.iter().filter(|i| !i.draining).collect();
    let reg = active.iter().fold(Resources::default(), |a, i| a.plus(i.registered));
    let used = active.iter().fold(Resources::default(), |a, i| a.plus(i.registered.minus(i.remaining)));
    let used = unplaced.iter().fold(used, |a, t| a.plus(*t)).plus(ahead);
    if target <= 0.0 || (used.cpu == 0 && used.mem == 0) {
        return 0.0;
    }
    let need = |u: u32, r: u32| (f64::from(u) * 100.0 / target - f64::from(r)).max(0.0);
    let (need_cpu, need_mem) = (need(used.cpu, reg.cpu), need(used.mem, reg.mem));
    if need_cpu == 0.0 && need_mem == 0.0 {
        return 0.0;
    }
    types
        .iter()
        .map(|t| {
            let per_unit_cpu = f64::from(t.resources.cpu) / t.weight;
            let per_unit_mem = f64::from(t.resources.mem) / t.weight;
            (need_cpu / per_unit_cpu).max(need_mem / per_unit_mem)
        })
        .fold(0.0, f64::max)
        .ceil()
}

/// Why instances were passed over for scale-in, counted: what "why is it not scaling in?" needs.
#[derive(Debug, Default, PartialEq)]
struct PassedOver {
    /// Already DRAINING (a drain in progress, or someone else's).
    draining: usize,
    /// Run standalone tasks (RunTask / StartTask): a drain would not move them.
    pinned: usize,
    /// Registered in the cluster but not the fleet's: removing them would not lower its capacity.
    outside: usize,
    /// Run tasks while `drain_before_scale_in` is off: only empty instances go.
    busy: usize,
    /// Removing them as well would exceed max_scale_in_step.
    step: usize,
    /// Removing them as well would take the capacity below min_capacity.
    min: usize,
    /// Removing them as well would leave the cluster no ACTIVE instance.
    last: usize,
    /// Their tasks would not fit in the free space of the instances that stay.
    no_room: usize,
    /// Without them the reservation would rise above the target.
    over_target: usize,
}

impl PassedOver {
    fn explain(&self, limits: &Limits, ahead: Resources) -> String {
        let parts = [
            (self.draining, "already draining".to_string()),
            (self.pinned, "running standalone tasks a drain would not move".to_string()),
            (self.outside, "outside the fleet".to_string()),
            (self.busy, "running tasks while drain_before_scale_in is off".to_string()),
            (self.step, format!("beyond max_scale_in_step {}", limits.max_scale_in_step)),
            (self.min, format!("that would take capacity below min_capacity {}", limits.min_capacity)),
            (self.last, "that would leave no active instance".to_string()),
            (self.no_room, "whose tasks fit nowhere else".to_string()),
            (
                self.over_target,
                format!(
                    "that would push the reservation above target{}",
                    if ahead == Resources::default() { "" } else { " with the demand expected within the lead time" }
                ),
            ),
        ];
        let said: Vec<String> =
            parts.into_iter().filter(|(n, _)| *n > 0).map(|(n, why)| format!("{n} {why}")).collect();
        if said.is_empty() {
            "no instances".into()
        } else {
            said.join(", ")
        }
    }
}

/// Instances to remove: fewest tasks first, each only if its tasks fit in what the remaining
/// instances have free, the reservation stays at or below target without it (with the demand
/// expected within the lead time, `ahead`, added), the step and min hold. Also why the others
/// were passed over.
fn choose_victims<'a>(
    instances: &'a [Instance],
    types: &[InstanceType],
    limits: &Limits,
    target: f64,
    ahead: Resources,
) -> (Vec<&'a Instance>, PassedOver) {
    let mut passed = PassedOver::default();
    let mut candidates: Vec<&Instance> = Vec::new();
    for i in instances {
        match () {
            _ if i.draining => passed.draining += 1,
            _ if i.pinned => passed.pinned += 1,
            _ if !i.in_fleet => passed.outside += 1,
            _ if !limits.drain_before_scale_in && !i.tasks.is_empty() => passed.busy += 1,
            _ => candidates.push(i),
        }
    }
    candidates.sort_by_key(|i| (i.tasks.len(), std::cmp::Reverse(i.remaining.cpu)));
    let mut victims: Vec<&Instance> = Vec::new();
    let mut removed_units = 0.0;
    for c in candidates {
        let w = weight_of(types, &c.instance_type);
        if removed_units + w > limits.max_scale_in_step {
            passed.step += 1;
            continue;
        }
        if target - removed_units - w < limits.min_capacity {
            passed.min += 1;
            continue;
        }
        let mut trial: Vec<&Instance> = victims.clone();
        trial.push(c);
        let keep: Vec<Instance> =
            instances.iter().filter(|i| !i.draining && !trial.iter().any(|v| v.id == i.id)).cloned().collect();
        if keep.is_empty() {
            passed.last += 1;
            continue;
        }
        let moved: Vec<Resources> = trial.iter().flat_map(|v| v.tasks.iter().copied()).collect();
        let p = pack(&moved, &keep, &[]);
        if p.fit_existing < moved.len() {
            passed.no_room += 1;
            continue;
        }
        // After the move, the remaining instances must still be at or below target.
        let mut after = keep.clone();
        let mut pool = moved.clone();
        pool.sort_by_key(|t| std::cmp::Reverse((t.cpu.max(t.mem), t.cpu, t.mem)));
        for t in pool {
            if let Some(i) = after.iter_mut().find(|i| t.fits_in(i.remaining)) {
                i.remaining = i.remaining.minus(t);
            }
        }
        if reservation_with(&after, ahead) > limits.target_reservation {
            passed.over_target += 1;
            continue;
        }
        removed_units += w;
        victims.push(c);
    }
    (victims, passed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{expect, Expect};
    use proptest::prelude::*;

    fn ty(name: &str, cpu: u32, mem: u32, weight: f64) -> InstanceType {
        InstanceType { name: name.into(), resources: Resources::new(cpu, mem), weight }
    }

    fn inst(id: &str, ty: &InstanceType, tasks: &[(u32, u32)]) -> Instance {
        let tasks: Vec<Resources> = tasks.iter().map(|(c, m)| Resources::new(*c, *m)).collect();
        let used = tasks.iter().fold(Resources::default(), |a, t| a.plus(*t));
        Instance {
            id: id.into(),
            instance_type: ty.name.clone(),
            registered: ty.resources,
            remaining: ty.resources.minus(used),
            tasks,
            draining: false,
            pinned: false,
            in_fleet: true,
            daemon: Resources::default(),
        }
    }

    fn limits() -> Limits {
        Limits {
            target_reservation: 80.0,
            min_capacity: 1.0,
            max_capacity: 40.0,
            max_scale_out_step: 10.0,
            max_scale_in_step: 2.0,
            scale_out_cooldown: Duration::from_secs(60),
            scale_in_cooldown: Duration::from_secs(600),
            lead_time: Duration::from_secs(180),
            drain_before_scale_in: true,
        }
    }

    fn trend(samples: &[(f64, u32)]) -> Trend {
        let mut t = Trend::default();
        for (at, cpu) in samples {
            t.push(*at, Resources::new(*cpu, *cpu));
        }
        t
    }

    #[test]
    fn only_demand_rising_in_every_interval_is_projected() {
        // Too few samples: no rate yet.
        assert_eq!(trend(&[(0.0, 100), (30.0, 200)]).rate(), None);
        // A steady ramp: the smallest growth rate (3 units per second).
        assert_eq!(trend(&[(0.0, 100), (30.0, 190), (60.0, 310)]).rate(), Some((3.0, 3.0)));
        // A one-off jump (a deploy) then flat: nothing.
        assert_eq!(trend(&[(0.0, 100), (30.0, 2000), (60.0, 2000)]).rate(), Some((0.0, 0.0)));
        // Falling: nothing.
        assert_eq!(trend(&[(0.0, 300), (30.0, 200), (60.0, 100)]).rate(), Some((0.0, 0.0)));
        // A jump inside a ramp does not inflate it; a sample out of order is ignored.
        let t = trend(&[(0.0, 0), (30.0, 5000), (60.0, 5030), (90.0, 5060), (80.0, 0)]);
        assert_eq!(t.rate(), Some((1.0, 1.0)));
        // Only the last four samples count: the fall at the start is forgotten.
        let t = trend(&[(0.0, 9000), (30.0, 0), (60.0, 30), (90.0, 60), (120.0, 90)]);
        assert_eq!(t.rate(), Some((1.0, 1.0)));
        // A ramp in steps (a service scaled every minute, seen every 30 s) still counts.
        assert_eq!(trend(&[(0.0, 0), (30.0, 60), (60.0, 60), (90.0, 120)]).rate(), Some((1.0, 1.0)));
        // A ramp that began inside the window: its rate from its first rise (2), not over the
        // quiet interval before it too (1).
        assert_eq!(trend(&[(0.0, 0), (30.0, 0), (60.0, 60), (90.0, 120)]).rate(), Some((2.0, 2.0)));
        // Up, then down: not rising.
        assert_eq!(trend(&[(0.0, 0), (30.0, 60), (60.0, 120), (90.0, 100)]).rate(), Some((0.0, 0.0)));
    }

    #[test]
    fn a_steady_ramp_scales_out_before_the_reservation_reaches_target() {
        // 2 instances, 50 % reserved: nothing to do on the reservation alone.
        let t = ty("m5.xlarge", 4096, 16384, 1.0);
        let fleet = Fleet { target: 2.0, fulfilled: 2.0, types: vec![t.clone()] };
        let obs = Observation { instances: vec![inst("a", &t, &[(4096, 4096)]), inst("b", &t, &[])], unplaced: vec![] };
        let flat = Memory { trend: trend(&[(940.0, 4096), (970.0, 4096), (1000.0, 4096)]), ..Memory::default() };
        let d = decide(&obs, &fleet, &flat, &limits(), 1000.0);
        assert_eq!(d.action, Action::Hold, "{}", d.reason);
        // Demand rising 512 CPU units every 30 s: 3072 more within the 180 s lead time, so 7168 of
        // 8192 (87.5 %) → a third instance now.
        let rising = Memory { trend: trend(&[(940.0, 3072), (970.0, 3584), (1000.0, 4096)]), ..Memory::default() };
        let d = decide(&obs, &fleet, &rising, &limits(), 1000.0);
        assert_eq!(d.action, Action::ScaleOut { to: 3.0 }, "{}", d.reason);
        expect!["reservation 50.0% (target 80%), 2 instances, 0 unplaced tasks, capacity 2 (fulfilled 2): scale out to 3: 1.0 units bring reservation to target once they run (demand rising: 3072 CPU units and 3072 MiB more expected within the 180s lead time); 0.0 units already launching"].assert_eq(&d.reason);
        // The look-ahead off.
        let off = Limits { lead_time: Duration::ZERO, ..limits() };
        let d = decide(&obs, &fleet, &rising, &off, 1000.0);
        assert_eq!(d.action, Action::Hold, "{}", d.reason);
        // Below target for long: an instance may go only if the rest stays at target with the
        // demand expected within the lead time. a holds 2048 of 4096 CPU units: without b it is at
        // 50 % now, but at 94 % with 10 units a second for 180 s more.
        let half = Observation {
            instances: vec![inst("a", &t, &[(1024, 1024), (1024, 1024)]), inst("b", &t, &[])],
            unplaced: vec![],
        };
        let calm = Memory { below_target_since: Some(0.0), ..Memory::default() };
        let d = decide(&half, &fleet, &calm, &limits(), 1000.0);
        assert!(matches!(&d.action, Action::ScaleIn { victims, .. } if victims == &["b"]), "{}", d.reason);
        let busy = Memory { trend: trend(&[(940.0, 1448), (970.0, 1748), (1000.0, 2048)]), ..calm };
        let d = decide(&half, &fleet, &busy, &limits(), 1000.0);
        assert_eq!(d.action, Action::Hold, "{}", d.reason);
        expect!["reservation 25.0% (target 80%), 2 instances, 0 unplaced tasks, capacity 2 (fulfilled 2): below target, but no instance can go (passed over: 2 that would push the reservation above target with the demand expected within the lead time)"].assert_eq(&d.reason);
    }

    #[test]
    fn daemon_tasks_are_not_demand() {
        // A DAEMON service's task on every instance: as instances register, the reservation grows,
        // but that is not demand the look-ahead should buy capacity for.
        let t = ty("m5.xlarge", 4096, 16384, 1.0);
        let mut a = inst("a", &t, &[(512, 512), (1024, 1024)]);
        a.daemon = Resources::new(512, 512);
        let obs = Observation { instances: vec![a], unplaced: vec![Resources::new(256, 256)] };
        assert_eq!(demand(&obs, &[t]), Resources::new(1280, 1280));
    }

    #[test]
    fn reservation_is_the_larger_of_cpu_and_memory() {
        let t = ty("m", 2048, 4096, 1.0);
        let obs = [inst("a", &t, &[(1024, 1024)]), inst("b", &t, &[(0, 2048)])];
        // CPU 1024/4096 = 25 %, memory 3072/8192 = 37.5 %.
        assert_eq!(reservation(&obs), 37.5);
    }

    #[test]
    fn unplaced_tasks_fill_free_space_first_then_new_instances() {
        let t = ty("c5.large", 2048, 4096, 1.0);
        let instances = [inst("a", &t, &[(1024, 1024)])];
        // One 1024-CPU task fits in a's free space; four more need two new instances.
        let tasks = vec![Resources::new(1024, 1024); 5];
        let p = pack(&tasks, &instances, std::slice::from_ref(&t));
        assert_eq!((p.fit_existing, p.units, p.too_large), (1, 2.0, 0));
        // Weighted: a type with weight 2 needs 2 units per instance.
        let big = ty("c5.xlarge", 4096, 8192, 2.0);
        let p = pack(&tasks, &instances, &[t.clone(), big.clone()]);
        // c5.large: 2 instances = 2 units; c5.xlarge: 1 instance = 2 units.
        assert_eq!(p.units, 2.0);
        // A task larger than every type is reported, not packed.
        let p = pack(&[Resources::new(9999, 1)], &[], &[t, big]);
        assert_eq!((p.units, p.too_large), (0.0, 1));
    }

    #[test]
    fn scale_out_decisions_are_bounded_and_explained() {
        let t = ty("c5.large", 2048, 4096, 1.0);
        let fleet = Fleet { target: 2.0, fulfilled: 2.0, types: vec![t.clone()] };
        let full = [inst("a", &t, &[(2048, 1024)]), inst("b", &t, &[(2048, 1024)])];
        let obs = Observation { instances: full.to_vec(), unplaced: vec![Resources::new(2048, 1024); 30] };
        let d = decide(&obs, &fleet, &Memory::default(), &limits(), 1000.0);
        assert_eq!(d.action, Action::ScaleOut { to: 12.0 }, "{}", d.reason);
        expect!["reservation 100.0% (target 80%), 2 instances, 30 unplaced tasks, capacity 2 (fulfilled 2): scale out to 12: 30 unplaced tasks: 0 fit in free space, the rest need 30.0 units (30 × c5.large); 38.0 units bring reservation to target once they run; 0.0 units already launching; bound by max_scale_out_step 10"].assert_eq(&d.reason);
        // Within the cooldown: hold, and say why.
        let mem = Memory { last_scale_out: Some(970.0), ..Memory::default() };
        let d = decide(&obs, &fleet, &mem, &limits(), 1000.0);
        assert_eq!(d.action, Action::Hold);
        expect!["reservation 100.0% (target 80%), 2 instances, 30 unplaced tasks, capacity 2 (fulfilled 2): needs 38.0 more units but the scale-out cooldown has 30s left"].assert_eq(&d.reason);
        // Capacity already launching counts as present: 32 tasks' worth of CPU at 80 % needs 40 units.
        let launching = Fleet { target: 40.0, fulfilled: 2.0, types: vec![t.clone()] };
        let d = decide(&obs, &launching, &Memory::default(), &limits(), 1000.0);
        assert_eq!(d.action, Action::Hold, "{}", d.reason);
        let launching = Fleet { target: 32.0, fulfilled: 2.0, types: vec![t.clone()] };
        let d = decide(&obs, &launching, &Memory::default(), &limits(), 1000.0);
        assert_eq!(d.action, Action::ScaleOut { to: 40.0 }, "{}", d.reason);
        // No unplaced tasks, reservation above target: scale out for headroom alone.
        let hot = Observation { instances: full.to_vec(), unplaced: vec![] };
        let d = decide(&hot, &fleet, &Memory::default(), &limits(), 1000.0);
        assert_eq!(d.action, Action::ScaleOut { to: 3.0 }, "{}", d.reason);
        // At max_capacity: hold, and say so.
        let at_max = Fleet { target: 40.0, fulfilled: 40.0, types: vec![t] };
        let d = decide(&obs, &at_max, &Memory::default(), &limits(), 1000.0);
        assert_eq!(d.action, Action::Hold);
        expect!["reservation 100.0% (target 80%), 2 instances, 30 unplaced tasks, capacity 40 (fulfilled 40): needs 38.0 more units but capacity is at max_capacity 40"].assert_eq(&d.reason);
    }

    #[test]
    fn scale_in_waits_for_the_cooldown_and_moves_tasks_first() {
        let t = ty("c5.large", 2048, 4096, 1.0);
        let fleet = Fleet { target: 4.0, fulfilled: 4.0, types: vec![t.clone()] };
        let instances = vec![
            inst("busy", &t, &[(512, 512), (512, 512)]),
            inst("idle", &t, &[]),
            inst("one", &t, &[(256, 256)]),
            inst("two", &t, &[(256, 256), (256, 256)]),
        ];
        let obs = Observation { instances, unplaced: vec![] };
        let early = Memory { below_target_since: Some(900.0), ..Memory::default() };
        let d = decide(&obs, &fleet, &early, &limits(), 1000.0);
        assert_eq!(d.action, Action::Hold, "{}", d.reason);
        expect!["reservation 21.9% (target 80%), 4 instances, 0 unplaced tasks, capacity 4 (fulfilled 4): below target for 100s of the 600s scale-in cooldown"].assert_eq(&d.reason);
        let long = Memory { below_target_since: Some(0.0), ..Memory::default() };
        let d = decide(&obs, &fleet, &long, &limits(), 1000.0);
        // Fewest tasks first, at most the step (2 units).
        assert_eq!(d.action, Action::ScaleIn { to: 2.0, victims: vec!["idle".into(), "one".into()] }, "{}", d.reason);
        // Without draining, only an instance that runs nothing may go.
        let no_drain = Limits { drain_before_scale_in: false, ..limits() };
        let d = decide(&obs, &fleet, &long, &no_drain, 1000.0);
        assert_eq!(d.action, Action::ScaleIn { to: 3.0, victims: vec!["idle".into()] }, "{}", d.reason);
        // Launching capacity blocks scale-in.
        let launching = Fleet { target: 5.0, fulfilled: 4.0, types: vec![t] };
        let d = decide(&obs, &launching, &long, &limits(), 1000.0);
        assert_eq!(d.action, Action::Hold, "{}", d.reason);
    }

    #[test]
    fn scale_in_names_what_bound_it() {
        let t = ty("c5.large", 2048, 4096, 1.0);
        let fleet = Fleet { target: 4.0, fulfilled: 4.0, types: vec![t.clone()] };
        // 1792 of 8192 CPU units reserved (22 %), below target for long.
        let obs = Observation {
            instances: vec![
                inst("busy", &t, &[(512, 512), (512, 512)]),
                inst("idle", &t, &[]),
                inst("one", &t, &[(256, 256)]),
                inst("two", &t, &[(256, 256), (256, 256)]),
            ],
            unplaced: vec![],
        };
        let long = Memory { below_target_since: Some(0.0), ..Memory::default() };
        let pin_one = |o: &mut Observation| o.instances[2].pinned = true;
        let leave_fleet = |o: &mut Observation| o.instances.iter_mut().for_each(|i| i.in_fleet = i.id == "idle");
        let none = |_: &mut Observation| {};
        let drain_idle = |o: &mut Observation| o.instances[1].draining = true;
        #[allow(clippy::type_complexity)]
        let cases: [(&str, Limits, &dyn Fn(&mut Observation), &[&str], Expect); 9] = [
            (
                "one already draining",
                limits(),
                &drain_idle,
                &["one"],
                expect!["reservation 29.2% (target 80%), 3 instances, 0 unplaced tasks, capacity 4 (fulfilled 4): scale in to 3: below target for 1000s; removing one (1 tasks moved elsewhere); others passed over: 1 already draining, 2 that would push the reservation above target"],
            ),
            ("the step", limits(), &none, &["idle", "one"], expect!["reservation 21.9% (target 80%), 4 instances, 0 unplaced tasks, capacity 4 (fulfilled 4): scale in to 2: below target for 1000s; removing idle, one (1 tasks moved elsewhere); others passed over: 2 beyond max_scale_in_step 2"]),
            (
                "min_capacity",
                Limits { min_capacity: 3.0, ..limits() },
                &none,
                &["idle"],
                expect!["reservation 21.9% (target 80%), 4 instances, 0 unplaced tasks, capacity 4 (fulfilled 4): scale in to 3: below target for 1000s; removing idle (0 tasks moved elsewhere); others passed over: 3 that would take capacity below min_capacity 3"],
            ),
            (
                "min_capacity, nothing can go",
                Limits { min_capacity: 4.0, ..limits() },
                &none,
                &[],
                expect!["reservation 21.9% (target 80%), 4 instances, 0 unplaced tasks, capacity 4 (fulfilled 4): below target, but no instance can go (passed over: 4 that would take capacity below min_capacity 4)"],
            ),
            (
                "the target: a third would leave 1792 on 2048",
                Limits { max_scale_in_step: 4.0, ..limits() },
                &none,
                &["idle", "one"],
                expect!["reservation 21.9% (target 80%), 4 instances, 0 unplaced tasks, capacity 4 (fulfilled 4): scale in to 2: below target for 1000s; removing idle, one (1 tasks moved elsewhere); others passed over: 2 that would push the reservation above target"],
            ),
            (
                "no draining",
                Limits { drain_before_scale_in: false, ..limits() },
                &none,
                &["idle"],
                expect!["reservation 21.9% (target 80%), 4 instances, 0 unplaced tasks, capacity 4 (fulfilled 4): scale in to 3: below target for 1000s; removing idle (0 tasks moved elsewhere); others passed over: 3 running tasks while drain_before_scale_in is off"],
            ),
            (
                "a standalone task",
                limits(),
                &pin_one,
                &["idle", "two"],
                expect!["reservation 21.9% (target 80%), 4 instances, 0 unplaced tasks, capacity 4 (fulfilled 4): scale in to 2: below target for 1000s; removing idle, two (2 tasks moved elsewhere); others passed over: 1 running standalone tasks a drain would not move, 1 beyond max_scale_in_step 2"],
            ),
            ("outside the fleet", limits(), &leave_fleet, &["idle"], expect!["reservation 21.9% (target 80%), 4 instances, 0 unplaced tasks, capacity 4 (fulfilled 4): scale in to 3: below target for 1000s; removing idle (0 tasks moved elsewhere); others passed over: 3 outside the fleet"]),
            (
                "room: a task of 1536 fits in no other instance's 512 free",
                Limits { max_scale_in_step: 4.0, target_reservation: 100.0, ..limits() },
                &|o: &mut Observation| {
                    o.instances = vec![
                        inst("a", &t, &[(1536, 512)]),
                        inst("b", &t, &[(1536, 512)]),
                        inst("c", &t, &[(1536, 512)]),
                        inst("idle", &t, &[]),
                    ]
                },
                &["idle"],
                expect!["reservation 56.2% (target 100%), 4 instances, 0 unplaced tasks, capacity 4 (fulfilled 4): scale in to 3: below target for 1000s; removing idle (0 tasks moved elsewhere); others passed over: 3 whose tasks fit nowhere else"],
            ),
        ];
        for (case, lim, setup, victims, said) in cases {
            let mut o = obs.clone();
            setup(&mut o);
            let d = decide(&o, &fleet, &long, &lim, 1000.0);
            match &d.action {
                Action::ScaleIn { victims: v, .. } => assert_eq!(v, victims, "{case}: {}", d.reason),
                Action::Hold => assert!(victims.is_empty(), "{case}: held: {}", d.reason),
                other => panic!("{case}: {other:?}: {}", d.reason),
            }
            said.assert_eq(&d.reason);
        }
    }

    #[test]
    fn daemon_tasks_stay_with_their_instance() {
        // Every instance runs a DAEMON service's task (1024 CPU); one runs a service task too.
        let t = ty("c5.large", 2048, 4096, 1.0);
        let with_daemon = |id: &str, tasks: &[(u32, u32)]| {
            let mut tasks = tasks.to_vec();
            tasks.push((1024, 256));
            let mut i = inst(id, &t, &tasks);
            i.daemon = i.tasks.pop().unwrap();
            i
        };
        let obs = Observation {
            instances: vec![with_daemon("a", &[]), with_daemon("svc", &[(512, 512)]), with_daemon("b", &[])],
            unplaced: vec![],
        };
        let fleet = Fleet { target: 3.0, fulfilled: 3.0, types: vec![t.clone()] };
        let long = Memory { below_target_since: Some(0.0), ..Memory::default() };
        // Without draining, instances running only a DAEMON task count as empty, and their DAEMON
        // tasks are not moved: (1024 + 512) / 2048 = 75 % is left on svc.
        let no_drain = Limits { drain_before_scale_in: false, ..limits() };
        let d = decide(&obs, &fleet, &long, &no_drain, 1000.0);
        assert_eq!(d.action, Action::ScaleIn { to: 1.0, victims: vec!["a".into(), "b".into()] }, "{}", d.reason);
    }

    #[test]
    fn only_tasks_some_type_can_hold_keep_the_cluster_from_counting_as_below_target() {
        let t = ty("c5.large", 2048, 4096, 1.0);
        let quiet = Observation { instances: vec![inst("a", &t, &[(256, 256)])], unplaced: vec![] };
        assert!(below_target(&quiet, std::slice::from_ref(&t), 80.0));
        // A task no type can hold is reported, but it does not hold capacity.
        let huge = Observation { unplaced: vec![Resources::new(8192, 256)], ..quiet.clone() };
        assert!(below_target(&huge, std::slice::from_ref(&t), 80.0));
        // One that would fit a new instance does.
        let waiting = Observation { unplaced: vec![Resources::new(1024, 256)], ..quiet };
        assert!(!below_target(&waiting, std::slice::from_ref(&t), 80.0));
    }

    fn arb_task() -> impl Strategy<Value = Resources> {
        (1u32..=4096, 1u32..=8192).prop_map(|(c, m)| Resources::new(c, m))
    }

    fn arb_types() -> impl Strategy<Value = Vec<InstanceType>> {
        prop::collection::vec((1u32..=4, 1u32..=4, 1u32..=4), 1..=3).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (c, m, w))| ty(&format!("t{i}"), 1024 * c, 2048 * m, f64::from(w)))
                .collect()
        })
    }

    proptest! {
        /// Whichever type the fleet launches for the units asked, the tasks fit.
        #[test]
        fn packing_never_under_provisions(tasks in prop::collection::vec(arb_task(), 0..40), types in arb_types()) {
            let p = pack(&tasks, &[], &types);
            let placeable: Vec<Resources> = tasks.iter().copied().filter(|t| types.iter().any(|ty| t.fits_in(ty.resources))).collect();
            for ty in &types {
                if placeable.iter().any(|t| !t.fits_in(ty.resources)) { continue; }
                let n = (p.units / ty.weight).floor() as usize;
                let new: Vec<Instance> = (0..n).map(|i| inst(&format!("n{i}"), ty, &[])).collect();
                let check = pack(&placeable, &new, &[]);
                prop_assert_eq!(check.fit_existing, placeable.len(), "type {} with {} instances", ty.name, n);
            }
        }

        /// With instances that have free space, the tasks use it (some task goes there whenever
        /// one fits) and the units asked hold the rest, whichever type the fleet launches.
        #[test]
        fn packing_onto_free_space_never_under_provisions(
            tasks in prop::collection::vec(arb_task(), 0..40),
            types in arb_types(),
            used in prop::collection::vec((0u32..=4096, 0u32..=16384), 0..6),
        ) {
            let tasks: Vec<Resources> = tasks.into_iter().filter(|t| types.iter().any(|ty| t.fits_in(ty.resources))).collect();
            let big = ty("m5.xlarge", 4096, 16384, 1.0);
            let existing: Vec<Instance> = used.iter().enumerate().map(|(i, u)| inst(&format!("e{i}"), &big, &[*u])).collect();
            let p = pack(&tasks, &existing, &types);
            if tasks.iter().any(|t| existing.iter().any(|e| t.fits_in(e.remaining))) {
                prop_assert!(p.fit_existing >= 1, "a task fits in free space but none was put there");
            }
            for ty in &types {
                if tasks.iter().any(|t| !t.fits_in(ty.resources)) { continue; }
                let n = (p.units / ty.weight).floor() as usize;
                let mut all = existing.clone();
                all.extend((0..n).map(|i| inst(&format!("n{i}"), ty, &[])));
                let check = pack(&tasks, &all, &[]);
                prop_assert_eq!(check.fit_existing, tasks.len(), "type {} with {} new instances", ty.name, n);
            }
        }

        /// Decisions stay in [min, max], within the steps, respect cooldowns, and never scale in while
        /// capacity is launching or tasks are unplaced.
        #[test]
        fn decisions_respect_the_limits(
            n in 1usize..8,
            per in prop::collection::vec(prop::collection::vec((1u32..=1024, 1u32..=2048), 0..4), 8),
            unplaced in prop::collection::vec(arb_task(), 0..20),
            launching in 0u32..3,
            since in prop::option::of(0.0f64..2000.0),
            last_out in prop::option::of(0.0f64..2000.0),
            last_in in prop::option::of(0.0f64..2000.0),
            demand in prop::collection::vec(0u32..20000, 0..=TREND_SAMPLES),
        ) {
            let t = ty("m5.xlarge", 4096, 16384, 1.0);
            let instances: Vec<Instance> = (0..n).map(|i| inst(&format!("i{i}"), &t, &per[i])).collect();
            let fleet = Fleet { target: n as f64 + f64::from(launching), fulfilled: n as f64, types: vec![t] };
            let samples: Vec<(f64, u32)> = demand.iter().enumerate().map(|(i, d)| (1900.0 + 30.0 * i as f64, *d)).collect();
            let mem = Memory { last_scale_out: last_out, last_scale_in: last_in, below_target_since: since, trend: trend(&samples) };
            let l = limits();
            let now = 2000.0;
            let obs = Observation { instances, unplaced };
            let d = decide(&obs, &fleet, &mem, &l, now);
            match &d.action {
                Action::Hold => {}
                Action::ScaleOut { to } => {
                    prop_assert!(*to > fleet.target && *to <= l.max_capacity && *to >= l.min_capacity);
                    prop_assert!(*to - fleet.target <= l.max_scale_out_step);
                    prop_assert!(last_out.is_none_or(|t| now - t >= l.scale_out_cooldown.as_secs_f64()));
                }
                Action::ScaleIn { to, victims } => {
                    prop_assert!(*to >= l.min_capacity && *to < fleet.target);
                    prop_assert!(fleet.target - *to <= l.max_scale_in_step);
                    prop_assert_eq!(launching, 0);
                    prop_assert!(obs.unplaced.is_empty());
                    prop_assert!(since.is_some_and(|s| now - s >= l.scale_in_cooldown.as_secs_f64()));
                    prop_assert!(last_in.is_none_or(|t| now - t >= l.scale_in_cooldown.as_secs_f64()));
                    prop_assert!(!victims.is_empty());
                }
            }
            prop_assert!(!d.reason.is_empty());
        }
    }
}
