"""Command-line client of the image classification service (httpx + tqdm only; no service code).

    python -m imgclass_client upload photos/ --api http://127.0.0.1:7071/api --key ick_... --out results.csv
    python -m imgclass_client classify a.jpg b.png --api http://127.0.0.1:7071/api --key ick_...
"""

from imgclass_client.client import ApiClient, ClientError, FileResult, classify_files, upload_folder

__all__ = ["ApiClient", "ClientError", "FileResult", "classify_files", "upload_folder"]
