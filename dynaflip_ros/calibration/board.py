"""ChArUco calibration board: definition, printable/texture image, detection and pose (OpenCV 4.12).

Board frame (OpenCV >= 4.6 `cv2.aruco.CharucoBoard`, non-legacy pattern): origin at the board's
top-left outer corner as printed, +x to the right along the columns, +y down along the rows,
+z into the board (x × y), metres. Chessboard (ChArUco) corner ids run row by row from the
top-left inner corner. Sources: OpenCV docs "Detection of ChArUco Boards" (tutorial_charuco_detection),
`cv2.aruco.CharucoDetector.detectBoard`, `CharucoBoard.matchImagePoints`, `cv2.solvePnP` with
`SOLVEPNP_IPPE` (planar targets) refined by `cv2.solvePnPRefineLM`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from dynaflip_ros.calibration.transforms import make_transform

# Dictionaries accepted by name (`cv2.aruco.DICT_*`).
DICTIONARIES: tuple[str, ...] = (
    "DICT_4X4_50", "DICT_4X4_100", "DICT_4X4_250", "DICT_5X5_50", "DICT_5X5_100", "DICT_5X5_250",
    "DICT_6X6_50", "DICT_6X6_100", "DICT_6X6_250", "DICT_APRILTAG_36h11",
)


@dataclass(frozen=True)
class BoardSpec:
    """A ChArUco board.

    squares_x / squares_y: chessboard squares along x (columns) / y (rows);
    square_length_m / marker_length_m: printed sizes (metres; measure the print with a caliper);
    dictionary: ArUco dictionary name (`DICTIONARIES`);
    margin_m: white border around the squares on the physical plate (only for rendering and
    texture generation, not part of the board frame).
    Raises ValueError on impossible sizes or an unknown dictionary.
    """

    squares_x: int = 5
    squares_y: int = 7
    square_length_m: float = 0.03
    marker_length_m: float = 0.022
    dictionary: str = "DICT_5X5_100"
    margin_m: float = 0.01

    def __post_init__(self) -> None:
        if not (isinstance(self.squares_x, int) and isinstance(self.squares_y, int)
                and self.squares_x >= 3 and self.squares_y >= 3):
            raise ValueError(f"squares_x/squares_y must be ints >= 3, got {self.squares_x}, {self.squares_y}")
        if not (math.isfinite(self.square_length_m) and 0.002 < self.square_length_m < 1.0):
            raise ValueError(f"square_length_m must be in (0.002, 1) m, got {self.square_length_m}")
        if not (math.isfinite(self.marker_length_m) and 0 < self.marker_length_m < self.square_length_m):
            raise ValueError("marker_length_m must be in (0, square_length_m)")
        if self.dictionary not in DICTIONARIES:
            raise ValueError(f"dictionary must be one of {DICTIONARIES}, got {self.dictionary!r}")
        if not (math.isfinite(self.margin_m) and 0 <= self.margin_m < 0.5):
            raise ValueError(f"margin_m must be in [0, 0.5) m, got {self.margin_m}")
        n_markers = (self.squares_x * self.squares_y) // 2
        cap = 587 if "APRILTAG" in self.dictionary else int(self.dictionary.rsplit("_", 1)[1])
        if n_markers > cap:
            raise ValueError(f"{self.dictionary} has {cap} markers, the board needs {n_markers}")

    @property
    def size_m(self) -> tuple[float, float]:
        """(width, height) of the squares area, metres."""
        return self.squares_x * self.square_length_m, self.squares_y * self.square_length_m

    @property
    def n_corners(self) -> int:
        """Number of inner (ChArUco) corners."""
        return (self.squares_x - 1) * (self.squares_y - 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["frame"] = "origin top-left outer corner, x right (columns), y down (rows), z into the board"
        return d

    @classmethod
    def from_dict(cls, d: dict) -> BoardSpec:
        keys = ("squares_x", "squares_y", "square_length_m", "marker_length_m", "dictionary", "margin_m")
        return cls(**{k: d[k] for k in keys if k in d})

    # ------------------------------------------------------------------ OpenCV objects
    def cv_board(self):
        """The `cv2.aruco.CharucoBoard`."""
        import cv2

        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        board = cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), self.square_length_m,
                                       self.marker_length_m, dictionary)
        board.setLegacyPattern(False)
        return board

    def corners_board_m(self) -> np.ndarray:
        """(n_corners, 3) ChArUco corner positions in the board frame, metres (index = corner id)."""
        return np.asarray(self.cv_board().getChessboardCorners(), dtype=float).reshape(-1, 3)

    def image(self, px_per_square: int = 100) -> np.ndarray:
        """Board image with its white margin, uint8 grey (H, W): the texture / print (1 square =
        `px_per_square` px)."""
        if px_per_square < 20:
            raise ValueError("px_per_square must be >= 20")
        margin_px = round(self.margin_m / self.square_length_m * px_per_square)
        w = self.squares_x * px_per_square + 2 * margin_px
        h = self.squares_y * px_per_square + 2 * margin_px
        return self.cv_board().generateImage((w, h), marginSize=margin_px, borderBits=1)

    def plate_size_m(self) -> tuple[float, float]:
        """(width, height) of the plate including the margin, metres (matches `image()`)."""
        w, h = self.size_m
        return w + 2 * self.margin_m, h + 2 * self.margin_m


@dataclass
class BoardDetection:
    """ChArUco corners found in one image and the board pose they give.

    ids: (M,) corner ids; image_points: (M, 2) px (OpenCV pixel centres at integers);
    object_points: (M, 3) board-frame metres; T_cam_board: (4, 4) board pose in the camera
    optical frame (None if the pose could not be solved); rms_px: reprojection RMS of that pose.
    """

    ids: np.ndarray
    image_points: np.ndarray
    object_points: np.ndarray
    T_cam_board: np.ndarray | None
    rms_px: float


def _to_gray(image: np.ndarray) -> np.ndarray:
    import cv2

    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {img.dtype}")
    if img.ndim == 2:
        return img
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    raise ValueError(f"image must be (H, W) or (H, W, 3) uint8 RGB, got shape {img.shape}")


def detect_board(image: np.ndarray, spec: BoardSpec, k: np.ndarray, dist: np.ndarray | None = None,
                 min_corners: int = 6) -> BoardDetection | None:
    """Detect the ChArUco board in an RGB (H, W, 3) or grey (H, W) uint8 image and solve its pose.

    k: (3, 3) camera matrix (px); dist: OpenCV distortion coefficients (None = zero).
    Returns None when fewer than `min_corners` corners are found or they are (nearly) collinear
    (the pose would be degenerate). Raises ValueError on a bad image or K.
    """
    import cv2

    k = np.asarray(k, dtype=float)
    if k.shape != (3, 3) or not np.all(np.isfinite(k)):
        raise ValueError(f"K must be a finite (3, 3) matrix, got {k!r}")
    dist = np.zeros(5) if dist is None else np.asarray(dist, dtype=float).ravel()
    gray = _to_gray(image)
    board = spec.cv_board()
    detector = cv2.aruco.CharucoDetector(board)
    ch_corners, ch_ids, _, _ = detector.detectBoard(gray)
    if ch_ids is None or len(ch_ids) < min_corners:
        return None
    # The detector interpolates corners from the ArUco marker corners, which come out +0.5 px off
    # OpenCV's pixel-centre convention (measured: a printed corner between pixels 99 and 100 is
    # returned at 100.0, cornerSubPix gives 99.5); refine on the saddle points as the OpenCV
    # ChArUco tutorial suggests, with a window that stays inside one square.
    win = _subpix_window(ch_corners)
    if win >= 2:
        ch_corners = cv2.cornerSubPix(gray, np.ascontiguousarray(ch_corners, dtype=np.float32), (win, win), (-1, -1),
                                      (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 50, 1e-3))
    obj, img = board.matchImagePoints(ch_corners, ch_ids)
    obj = np.asarray(obj, dtype=float).reshape(-1, 3)
    img = np.asarray(img, dtype=float).reshape(-1, 2)
    ids = np.asarray(ch_ids).ravel().astype(int)
    # Degenerate when all corners lie on (nearly) one line: second singular value of the centred points.
    s = np.linalg.svd(obj[:, :2] - obj[:, :2].mean(axis=0), compute_uv=False)
    if s[1] < 0.5 * spec.square_length_m:
        return None
    pose = solve_board_pose(obj, img, k, dist)
    if pose is None:
        return BoardDetection(ids, img, obj, None, float("nan"))
    t, rms = pose
    return BoardDetection(ids, img, obj, t, rms)


def _subpix_window(corners: np.ndarray) -> int:
    """Half window (px) for cornerSubPix: a quarter of the smallest corner spacing, 2..6 px."""
    c = np.asarray(corners, dtype=float).reshape(-1, 2)
    if len(c) < 2:
        return 0
    d = np.linalg.norm(c[:, None, :] - c[None, :, :], axis=2)
    d[d == 0] = np.inf
    return int(np.clip(np.floor(np.min(d) / 4), 0, 6))


def solve_board_pose(object_points: np.ndarray, image_points: np.ndarray, k: np.ndarray,
                     dist: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Planar PnP: (M, 3) board points (z = 0), (M, 2) px -> ((4, 4) T_cam_board, RMS px) or None."""
    import cv2

    obj = np.ascontiguousarray(object_points, dtype=np.float64).reshape(-1, 1, 3)
    img = np.ascontiguousarray(image_points, dtype=np.float64).reshape(-1, 1, 2)
    ok, rvec, tvec = cv2.solvePnP(obj, img, k, dist, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        return None
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, k, dist, rvec, tvec)
    r, _ = cv2.Rodrigues(rvec)
    t = make_transform(r, tvec.ravel())
    return t, reprojection_rms(object_points, image_points, t, k, dist)


def project_points(points_board: np.ndarray, t_cam_board: np.ndarray, k: np.ndarray,
                   dist: np.ndarray | None = None) -> np.ndarray:
    """(M, 3) board points -> (M, 2) px through pose (4, 4) and intrinsics (OpenCV model)."""
    import cv2

    dist = np.zeros(5) if dist is None else np.asarray(dist, dtype=float).ravel()
    rvec, _ = cv2.Rodrigues(np.ascontiguousarray(t_cam_board[:3, :3]))
    px, _ = cv2.projectPoints(np.ascontiguousarray(points_board, dtype=np.float64).reshape(-1, 1, 3),
                              rvec, np.ascontiguousarray(t_cam_board[:3, 3]), np.asarray(k, float), dist)
    return px.reshape(-1, 2)


def reprojection_errors(object_points: np.ndarray, image_points: np.ndarray, t_cam_board: np.ndarray,
                        k: np.ndarray, dist: np.ndarray | None = None) -> np.ndarray:
    """(M,) pixel distances between detected corners and the corners projected through the pose."""
    return np.linalg.norm(project_points(object_points, t_cam_board, k, dist) - image_points, axis=1)


def reprojection_rms(object_points, image_points, t_cam_board, k, dist=None) -> float:
    """RMS (px) of `reprojection_errors`."""
    e = reprojection_errors(object_points, image_points, t_cam_board, k, dist)
    return float(np.sqrt(np.mean(e ** 2)))
