//! The Bookstore gRPC service over the in-memory [`Store`]: every RPC of
//! bookstore.v1, with the google.rpc error details a real service sends.
//! Every write to a book is also recorded for the shelf's watchers.

use super::*;
use shelf_event::Kind;

#[tonic::async_trait]
impl Bookstore for Store {
    type WatchShelfStream = ShelfEvents;

    async fn list_shelves(
        &self,
        _: Request<ListShelvesRequest>,
    ) -> Result<Response<ListShelvesResponse>, Status> {
        let shelves = self.data().shelves.values().cloned().collect();
        Ok(Response::new(ListShelvesResponse { shelves }))
    }

    async fn create_shelf(
        &self,
        request: Request<CreateShelfRequest>,
    ) -> Result<Response<Shelf>, Status> {
        let mut shelf = request.into_inner().shelf.unwrap_or_default();
        if shelf.theme.trim().is_empty() {
            return Err(invalid("shelf.theme", "must not be empty"));
        }
        let mut data = self.data();
        data.next_id += 1;
        shelf.id = data.next_id;
        shelf.book_count = 0;
        data.shelves.insert(shelf.id, shelf.clone());
        Ok(Response::new(shelf))
    }

    async fn get_shelf(
        &self,
        request: Request<GetShelfRequest>,
    ) -> Result<Response<Shelf>, Status> {
        self.shelf(request.into_inner().shelf).map(Response::new)
    }

    async fn delete_shelf(
        &self,
        request: Request<DeleteShelfRequest>,
    ) -> Result<Response<()>, Status> {
        let shelf = request.into_inner().shelf;
        self.shelf(shelf)?;
        let mut data = self.data();
        if data.books.keys().any(|(s, _)| *s == shelf) {
            return Err(Status::failed_precondition(format!(
                "shelves/{shelf} still holds books"
            )));
        }
        data.shelves.remove(&shelf);
        data.logs.remove(&shelf);
        Ok(Response::new(()))
    }

    async fn list_books(
        &self,
        request: Request<ListBooksRequest>,
    ) -> Result<Response<ListBooksResponse>, Status> {
        let request = request.into_inner();
        self.shelf(request.shelf)?;
        if request.page_size < 0 {
            return Err(invalid("page_size", "must not be negative"));
        }
        let start: i64 = if request.page_token.is_empty() {
            0
        } else {
            request
                .page_token
                .parse()
                .map_err(|_| invalid("page_token", "is not a token from this API"))?
        };
        let size = if request.page_size == 0 {
            50
        } else {
            request.page_size as usize
        };
        let data = self.data();
        let mut books: Vec<Book> = data
            .books
            .range((request.shelf, start)..(request.shelf, i64::MAX))
            .map(|(_, b)| b.clone())
            .take(size + 1)
            .collect();
        let next_page_token = if books.len() > size {
            books.pop().map(|b| b.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListBooksResponse {
            books,
            next_page_token,
        }))
    }

    async fn create_book(
        &self,
        request: Request<CreateBookRequest>,
    ) -> Result<Response<Book>, Status> {
        let request = request.into_inner();
        self.shelf(request.shelf)?;
        let mut book = request.book.unwrap_or_default();
        if book.title.trim().is_empty() {
            return Err(invalid("book.title", "must not be empty"));
        }
        let mut data = self.data();
        data.next_id += 1;
        book.id = data.next_id;
        book.name = format!("shelves/{}/books/{}", request.shelf, book.id);
        data.books.insert((request.shelf, book.id), book.clone());
        data.changed(request.shelf, Kind::BookCreated, &book);
        drop(data);
        self.recount();
        Ok(Response::new(book))
    }

    async fn get_book(&self, request: Request<GetBookRequest>) -> Result<Response<Book>, Status> {
        let request = request.into_inner();
        let (shelf, book) = if request.name.is_empty() {
            (request.shelf, request.book)
        } else {
            parse_name(&request.name)?
        };
        self.book(shelf, book).map(Response::new)
    }

    async fn update_book(
        &self,
        request: Request<UpdateBookRequest>,
    ) -> Result<Response<Book>, Status> {
        let request = request.into_inner();
        let patch = request.book.unwrap_or_default();
        let mut book = self.book(request.shelf, patch.id)?;
        let paths = request.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            return Err(invalid(
                "update_mask",
                "name the fields to update, e.g. ?updateMask=title,rating",
            ));
        }
        for path in &paths {
            match path.as_str() {
                "title" => book.title = patch.title.clone(),
                "author" => book.author = patch.author.clone(),
                "isbn" => book.isbn = patch.isbn.clone(),
                "genre" => book.genre = patch.genre,
                "page_count" => book.page_count = patch.page_count,
                "tags" => book.tags = patch.tags.clone(),
                "publish_time" => book.publish_time = patch.publish_time,
                "description" => book.description = patch.description.clone(),
                "rating" => book.rating = patch.rating,
                "in_stock" => book.in_stock = patch.in_stock,
                other => {
                    return Err(invalid(
                        "update_mask",
                        &format!("'{other}' cannot be updated"),
                    ));
                }
            }
        }
        let mut data = self.data();
        data.books.insert((request.shelf, book.id), book.clone());
        data.changed(request.shelf, Kind::BookUpdated, &book);
        Ok(Response::new(book))
    }

    async fn delete_book(
        &self,
        request: Request<DeleteBookRequest>,
    ) -> Result<Response<()>, Status> {
        let request = request.into_inner();
        self.book(request.shelf, request.book)?;
        let mut data = self.data();
        if let Some(book) = data.books.remove(&(request.shelf, request.book)) {
            data.changed(request.shelf, Kind::BookDeleted, &book);
        }
        drop(data);
        self.recount();
        Ok(Response::new(()))
    }

    async fn publish_book(
        &self,
        request: Request<PublishBookRequest>,
    ) -> Result<Response<Book>, Status> {
        let request = request.into_inner();
        let mut book = self.book(request.shelf, request.book)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        book.publish_time = Some(request.publish_time.unwrap_or(prost_types::Timestamp {
            seconds: now,
            nanos: 0,
        }));
        let mut data = self.data();
        data.books.insert((request.shelf, book.id), book.clone());
        data.changed(request.shelf, Kind::BookUpdated, &book);
        Ok(Response::new(book))
    }

    async fn search_books(
        &self,
        request: Request<SearchBooksRequest>,
    ) -> Result<Response<SearchBooksResponse>, Status> {
        let request = request.into_inner();
        let query = request.query.to_lowercase();
        let after = request.published_after.map(|t| t.seconds);
        let limit = if request.page_size <= 0 {
            50
        } else {
            request.page_size as usize
        };
        let books = self
            .data()
            .books
            .values()
            .filter(|b| {
                query.is_empty()
                    || b.title.to_lowercase().contains(&query)
                    || b.author.to_lowercase().contains(&query)
            })
            .filter(|b| request.genres.is_empty() || request.genres.contains(&b.genre))
            .filter(|b| after.is_none_or(|a| b.publish_time.is_some_and(|t| t.seconds > a)))
            .filter(|b| !request.in_stock_only || b.in_stock)
            .take(limit)
            .cloned()
            .collect();
        Ok(Response::new(SearchBooksResponse { books }))
    }

    async fn get_book_author(
        &self,
        request: Request<GetBookRequest>,
    ) -> Result<Response<Book>, Status> {
        self.get_book(request).await
    }

    async fn get_book_cover(
        &self,
        request: Request<GetBookRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        let request = request.into_inner();
        let book = self.book(request.shelf, request.book)?;
        if let Some(cover) = self.data().covers.get(&(request.shelf, request.book)) {
            return Ok(Response::new(cover.clone()));
        }
        let title = book.title.replace('&', "&amp;").replace('<', "&lt;");
        let svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"200\" height=\"300\"><rect width=\"200\" height=\"300\" fill=\"#234\"/><text x=\"10\" y=\"150\" fill=\"#fff\" font-size=\"12\">{title}</text></svg>"
        );
        Ok(Response::new(HttpBody {
            content_type: "image/svg+xml".into(),
            data: svg.into_bytes(),
            extensions: vec![],
        }))
    }

    async fn put_book_cover(
        &self,
        request: Request<PutBookCoverRequest>,
    ) -> Result<Response<()>, Status> {
        let request = request.into_inner();
        self.book(request.shelf, request.book)?;
        let cover = request.cover.unwrap_or_default();
        if cover.data.is_empty() {
            return Err(invalid("cover", "the body is empty"));
        }
        self.data()
            .covers
            .insert((request.shelf, request.book), cover);
        Ok(Response::new(()))
    }

    async fn watch_shelf(
        &self,
        request: Request<WatchShelfRequest>,
    ) -> Result<Response<Self::WatchShelfStream>, Status> {
        let request = request.into_inner();
        let watch = self.data().watch(request.shelf, request.since_revision)?;
        Ok(Response::new(watch.into_stream()))
    }
}
