"""Type stubs of the native module (tenpak-py/src/lib.rs)."""

import os
from typing import Dict, List, Optional, Tuple, Union

__version__: str

class TenpakError(Exception): ...

class Reader:
    def __init__(self, path: Union[str, os.PathLike[str]]) -> None: ...
    def keys(self) -> List[str]: ...
    def metadata(self) -> Dict[str, str]: ...
    def info(self, name: str) -> Tuple[str, List[int]]: ...
    def read(self, name: str) -> bytes: ...
    def read_rows(self, name: str, start: int, stop: int) -> bytes: ...

def compress(
    src: Union[str, os.PathLike[str]],
    dst: Union[str, os.PathLike[str]],
    codec: str = ...,
    config: Optional[Union[str, os.PathLike[str]]] = ...,
    force: bool = ...,
    threads: Optional[int] = ...,
) -> str: ...
def decompress(
    src: Union[str, os.PathLike[str]],
    dst: Union[str, os.PathLike[str]],
    dtype: str = ...,
    force: bool = ...,
    threads: Optional[int] = ...,
    format: Optional[str] = ...,
) -> str: ...
