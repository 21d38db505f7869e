import { ErrorCodes, OcdnError } from '../common/errors.ts';

/** One rung of a bit-rate ladder. `bitrate` is the average bit rate of the muxed stream. */
export interface LadderRung {
  /** Rendition name, also its folder under the title: "730k". */
  name: string;
  /** bits/s (average; segments vary around it, see synthetic.ts). */
  bitrate: number;
  width: number;
  height: number;
  frameRate: number;
  /** RFC 6381 codecs string for the master playlist (video + AAC-LC audio). */
  codecs: string;
}

export type LadderName = 'apple' | 'small';
export const LADDER_NAMES: readonly LadderName[] = ['apple', 'small'];

const AAC_LC = 'mp4a.40.2';

/**
 * H.264 High profile level for the frame size at 30 fps: Apple's spec caps H.264 at High 4.2;
 * players use the level in CODECS to skip variants the device cannot decode, so it must be
 * the lowest level that fits, not one blanket value.
 */
function h264Codecs(width: number, height: number): string {
  const pixels = width * height;
  const level = pixels <= 414_720 ? '1e' /* 3.0 */ : pixels <= 921_600 ? '1f' /* 3.1 */ : '28'; /* 4.0 */
  return `avc1.6400${level},${AAC_LC}`;
}

function rung(kbps: number, width: number, height: number): LadderRung {
  return { name: `${kbps}k`, bitrate: kbps * 1000, width, height, frameRate: 30, codecs: h264Codecs(width, height) };
}

/**
 * The 16:9 H.264 ladder of Apple's "HLS Authoring Specification for Apple Devices"
 * (bit rates in kbit/s with their frame sizes). Two rungs share 768x432 and two 1280x720 on
 * purpose: the spec trades bit rate before resolution there.
 */
const APPLE: readonly LadderRung[] = [
  rung(145, 416, 234),
  rung(365, 640, 360),
  rung(730, 768, 432),
  rung(1100, 768, 432),
  rung(2000, 960, 540),
  rung(3000, 1280, 720),
  rung(4500, 1280, 720),
  rung(6000, 1920, 1080),
  rung(7800, 1920, 1080),
];

/** Three rungs spanning the same range, so tests and demos stay small but ABR still has choices. */
const SMALL: readonly LadderRung[] = [rung(365, 640, 360), rung(1100, 768, 432), rung(3000, 1280, 720)];

const LADDERS: Record<LadderName, readonly LadderRung[]> = { apple: APPLE, small: SMALL };

/** A copy of a preset ladder, lowest bit rate first. */
export function getLadder(name: string): LadderRung[] {
  const ladder = LADDERS[name as LadderName];
  if (!ladder) throw new OcdnError(ErrorCodes.CONFIG, `unknown ladder "${name}" (use ${LADDER_NAMES.join(' or ')})`);
  return ladder.map((r) => ({ ...r }));
}
