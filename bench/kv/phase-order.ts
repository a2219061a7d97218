/**
 * Which of the two systems runs a phase first. It alternates from one phase to the next and,
 * for a phase run once per round, from one round to the next. A phase's order must not be the
 * same in every round (rounds of an even number of phases did that until run AW): whatever one
 * system leaves behind for the other (dirty pages, a busy core, a system fresh from its own last
 * phase) is then in every round's ratio alike, and the median over rounds cannot cancel it.
 */
export class PhaseOrder {
  private readonly timesRun = new Map<string, number>();

  /** The systems in the order they run `phase` this time (a new phase takes the next turn). */
  next<T>(phase: string, systems: readonly T[]): T[] {
    const n = this.timesRun.get(phase) ?? this.timesRun.size;
    this.timesRun.set(phase, n + 1);
    return n % 2 === 0 ? [...systems] : [...systems].reverse();
  }
}
