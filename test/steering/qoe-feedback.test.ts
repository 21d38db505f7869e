import { describe, expect, it } from 'vitest';
import { pickDemotions, type EdgeQoe } from '../../steering/qoe-feedback.ts';

const row = (value: string, playS: number, stallS: number, segments = 100, errors = 0): EdgeQoe => ({
  value,
  playS,
  stallS,
  sessionEnds: 10,
  rebufferRatio: stallS / (playS + stallS),
  errorRate: 0,
  segments,
  errors,
});

describe('QoE feedback demotion rule', () => {
  it('demotes the one edge whose rebuffering is far above its peers, and only it', () => {
    const d = pickDemotions([row('edge-1', 1000, 5), row('edge-2', 1000, 8), row('edge-3', 1000, 150)]);
    expect(d.filter((x) => x.demoted).map((x) => x.id)).toEqual(['edge-3']);
  });

  it('demotes nobody when all edges suffer alike (a network problem, not an edge problem)', () => {
    const d = pickDemotions([row('edge-1', 1000, 100), row('edge-2', 1000, 120), row('edge-3', 1000, 140)]);
    expect(d.some((x) => x.demoted)).toBe(false);
  });

  it('ignores edges with too little playback to judge, and a lone edge', () => {
    expect(pickDemotions([row('edge-1', 1000, 5), row('edge-2', 10, 10)]).some((x) => x.demoted)).toBe(false);
    expect(pickDemotions([row('edge-1', 1000, 500)])).toEqual([{ id: 'edge-1', demoted: false, why: 'no peers to compare with' }]);
  });

  it('demotes on errors per segment far above the peers', () => {
    const d = pickDemotions([row('edge-1', 1000, 0, 200, 0), row('edge-2', 1000, 0, 200, 1), row('edge-3', 1000, 0, 200, 40)]);
    expect(d.find((x) => x.id === 'edge-3')?.demoted).toBe(true);
    expect(d.find((x) => x.id === 'edge-1')?.demoted).toBe(false);
  });
});
