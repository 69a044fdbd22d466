"""The captioned direction of a bouncing digit, window by window: how streamed clips past F frames are judged.

A caption names the first leg of a clip ("the digit seven moves left"); a longer clip bounces off the walls
(minimagic/data.py), so after a bounce the right motion is the caption's direction reflected on the axis of
that wall. `expected_directions` follows the generated digit's own path (docs/paper.md §10):

- the digit touches a wall when its centroid comes within `margin` pixels of the centroid a 28x28 digit has
  against that wall (13.5 px from the edge) *while the expected motion points at that wall*; the expected
  velocity on that axis flips at the frame of the run closest to the wall, and only there;
- in a window without a bounce the one right direction is the expected one (as `motion_direction` judges a
  clip against its caption); on an axis where the digit bounces inside the window, its net motion may go
  either way (or nowhere), so every direction that agrees on the other axis is right.

Outside a bounce, a window whose centroid moves less than 1 px is wrong (a still digit keeps no direction). A
digit that turns back in mid-canvas or sticks to a wall is scored wrong;
one that bounces where a real clip would is scored right (tests/test_streaming.py checks both).
"""

import torch

from minimagic.data import DIGIT_SIZE, DIRECTION_NAMES, DIRECTIONS
from minimagic.metrics import centroid_path, motion_direction

UNIT_STEPS = torch.tensor([DIRECTIONS[name] for name in DIRECTION_NAMES], dtype=torch.float32)  # (8, 2): dx, dy


def expected_velocities(path: torch.Tensor, direction: int, size: int, margin: float = 4.0) -> torch.Tensor:
    """Signs (+-1, 0) of the expected motion at each step f -> f+1 of one centroid path (F, 2): (F-1, 2)."""
    if path.ndim != 2 or path.shape[1] != 2 or len(path) < 2:
        raise ValueError(f"path must be (F >= 2, 2) centroids (x, y), got {tuple(path.shape)}")
    if not 0 <= direction < len(DIRECTION_NAMES):
        raise ValueError(f"direction must be an index into DIRECTION_NAMES (0..7), got {direction}")
    low, high = DIGIT_SIZE / 2 - 0.5, size - DIGIT_SIZE / 2 - 0.5  # the centroid of a digit against each wall
    velocity = UNIT_STEPS[direction].clone()  # (2,)
    steps = torch.empty(len(path) - 1, 2)
    for axis in range(2):
        sign, f = velocity[axis].item(), 0
        while f < len(path) - 1:
            wall = high if sign > 0 else low
            distance = (path[f:, axis] - wall).abs()  # (F - f,)
            if sign != 0 and distance[0] <= margin:  # a run of frames at the wall ahead: flip at its closest
                run = int((distance <= margin).long().cumprod(0).sum())
                touch = f + int(distance[:run].argmin())
                steps[f:touch, axis] = sign
                sign = -sign
                steps[touch:touch + 1, axis] = sign  # away from the wall: the next check starts a step later,
                f = touch + 1  # so a canvas whose walls lie within `margin` of each other cannot loop forever
                continue
            steps[f, axis] = sign
            f += 1
    return steps


def acceptable_directions(video: torch.Tensor, directions: torch.Tensor, window: int,
                          margin: float = 4.0) -> torch.Tensor:
    """Which of the 8 directions are right in each `window`-frame window: (N, F, 1, H, W) -> (N, F // window, 8)."""
    if video.ndim != 5 or video.shape[2] != 1 or len(directions) != len(video):
        raise ValueError(f"video must be (N, F, 1, H, W) with one direction per clip, got {tuple(video.shape)} "
                         f"and {len(directions)} directions")
    if not 2 <= window <= video.shape[1]:
        raise ValueError(f"window must be in [2, {video.shape[1]}] frames, got {window}")
    paths = centroid_path(video)  # (N, F, 2)
    num_windows = video.shape[1] // window
    result = torch.empty(len(video), num_windows, len(DIRECTION_NAMES), dtype=torch.bool)
    for n, direction in enumerate(directions.tolist()):
        steps = expected_velocities(paths[n], direction, video.shape[-1], margin)  # (F-1, 2)
        for w in range(num_windows):
            signs = steps[w * window:(w + 1) * window - 1]  # (window-1, 2): the window's own steps
            fixed = (signs == signs[:1]).all(0)  # (2,): no bounce on this axis inside the window
            result[n, w] = ((UNIT_STEPS == signs[0]) | ~fixed).all(-1)  # (8,)
    return result


def direction_kept(video: torch.Tensor, directions: torch.Tensor, window: int, margin: float = 4.0) -> torch.Tensor:
    """Per clip and window, whether the centroid moves in a right direction: (N, F // window) bool. Outside a
    bounce it must move at least 1 px: a still digit keeps no direction."""
    acceptable = acceptable_directions(video, directions, window, margin)  # (N, W, 8)
    windows = video[:, :acceptable.shape[1] * window].unflatten(1, (acceptable.shape[1], window))
    # windows: (N, W, window, 1, H, W)
    path = centroid_path(windows)  # (N, W, window, 2)
    moves = (path[..., -1, :] - path[..., 0, :]).norm(dim=-1) >= 1  # (N, W)
    bounces = acceptable.sum(-1) > 1  # (N, W): a bounce inside the window, its net motion may be ~0
    return acceptable.gather(-1, motion_direction(windows)[..., None])[..., 0] & (moves | bounces)  # (N, W)
